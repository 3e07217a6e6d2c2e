// Package fault is unplug's fault layer: a gVisor link endpoint that sits
// under the peer's NIC, classifies every IP packet in both directions, and
// drops, delays, rejects, resets, duplicates, reorders, corrupts or paces it
// by rule.
//
// The pieces, each usable alone:
//
//   - packet.Parse (the stdlib-only internal/packet) fills a packet.Packet
//     from raw IP bytes without allocating (IPv4, IPv6 with extension
//     headers, TCP, UDP, ICMP); the rules, the flow tracker and the capture
//     all read that one parsed view.
//   - ParseSpec reads one rule in the grammar of docs/fault-rules.md into a
//     Spec, and Spec.String writes it back.
//   - A Controller holds the rules and decides each packet's fate. Its
//     Decide is lock-free and allocation-free for packets no rule selects;
//     rules that select by what a segment means to its connection
//     (match=retransmission, after=established, until=rto:3, ...) make it
//     follow the connections in their scope with a bounded flow.Tracker.
//     Every random choice comes from its seeded generator.
//   - An Endpoint wraps the device's link endpoint (the link/sniffer
//     pattern): stack.CreateNIC(id, fault.NewEndpoint(dev, ctl, obs)). It
//     never blocks in WritePackets; held packets and packets it makes up
//     for the peer wait in one queue driven by the controller's clock, so
//     the same layer runs in wall time on a TUN device and in virtual time
//     in package vlink.
//   - An Observer sees every packet with its Decision, and every packet the
//     layer makes up (Verdict Injected); Log is an Observer keeping the
//     fault log.
package fault
