package stack

import (
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// groEndpoint sits between the NIC and the fault layer of a peer on an
// offload device. The device link cuts each TCP super-packet the kernel
// sends into the MSS-sized segments a wire would carry, so that fault rules
// judge every segment on its own, and brackets them with begin and end.
// When every segment passed, in order, TCP receives the super-packet whole,
// as a Linux receiver's GRO would have built it; otherwise each run of
// consecutive segments that passed goes up as one packet, and everything
// else the fault layer delivered during the batch (delayed packets it
// released meanwhile, duplicates, corrupted copies, forged resets) goes up
// as it came, in order. Packets delivered outside a batch go up at once.
//
// The merging is done here rather than by gVisor's generic receive
// offload (stack/gro): that engine rewrites headers of the packets it
// merges in place and, for IPv6, leaks a reference to every packet's
// chunks; the runs here are rebuilt from the super-packet with headers of
// their own (tun.MergeTCP), sharing only its payload.
//
// Checksums: the link computes every segment's checksums (so captures show
// what a wire would carry) and marks them RXChecksumValidated; a merged or
// whole super-packet carries checksums valid only for a segment, or only
// the pseudo-header sum the kernel left. gVisor's NIC overwrites the mark
// on every packet from its endpoint's CapabilityRXChecksumOffload
// (stack/nic.go), so the endpoint reports that capability exactly while it
// delivers a packet whose mark is set (deliveries are serialized by mu):
// packets the link did not check are verified by gVisor as before.
type groEndpoint struct {
	nested.Endpoint

	mu    sync.Mutex // serializes deliveries
	batch bool
	held  []heldPacket // delivered during the batch, one reference each

	validated atomic.Bool // the packet being delivered up has checked checksums

	// Batches that went up whole, and those whose segments were merged
	// again because not all of them passed (tests read these).
	wholeBatches, mergedBatches atomic.Uint64
}

var _ gstack.LinkEndpoint = (*groEndpoint)(nil)
var _ gstack.NetworkDispatcher = (*groEndpoint)(nil)

// newGROEndpoint wraps lower (the fault layer).
func newGROEndpoint(lower gstack.LinkEndpoint) *groEndpoint {
	e := &groEndpoint{}
	e.Init(lower, e)
	return e
}

// DeliverNetworkPacket implements stack.NetworkDispatcher.
func (e *groEndpoint) DeliverNetworkPacket(protocol tcpip.NetworkProtocolNumber, pkt *gstack.PacketBuffer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.batch {
		e.deliverUpLocked(protocol, pkt)
		return
	}
	e.held = append(e.held, heldPacket{protocol, pkt.IncRef()})
}

// heldPacket is a packet that passed the fault layer during a batch.
type heldPacket struct {
	proto tcpip.NetworkProtocolNumber
	pkt   *gstack.PacketBuffer
}

// deliverUpLocked hands pkt to the NIC with its checksum mark.
func (e *groEndpoint) deliverUpLocked(protocol tcpip.NetworkProtocolNumber, pkt *gstack.PacketBuffer) {
	e.validated.Store(pkt.RXChecksumValidated)
	e.Endpoint.DeliverNetworkPacket(protocol, pkt)
	e.validated.Store(false)
}

// Capabilities implements stack.LinkEndpoint; see the type's comment.
func (e *groEndpoint) Capabilities() gstack.LinkEndpointCapabilities {
	c := e.Endpoint.Capabilities()
	if e.validated.Load() {
		c |= gstack.CapabilityRXChecksumOffload
	}
	return c
}

// begin starts a batch: packets are held until end.
func (e *groEndpoint) begin() {
	e.mu.Lock()
	e.batch = true
	e.mu.Unlock()
}

// merger builds the packet carrying count consecutive segments of a
// batch from first on, with one reference the caller owns; nil if it
// cannot.
type merger func(first, count int) *gstack.PacketBuffer

// end closes the batch. sent are the segments the link injected, in
// order, each with a reference end releases. If exactly these came
// through, merge(0, len(sent)) goes up instead of them; otherwise runs of
// consecutive sent segments among what came through go up merged. The
// segments are released before the whole super-packet is built, so that
// its payload is no longer shared and gVisor parses it in place.
func (e *groEndpoint) end(proto tcpip.NetworkProtocolNumber, sent []*gstack.PacketBuffer, merge merger) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.batch = false
	if samePackets(e.held, sent) {
		e.wholeBatches.Add(1)
		e.releaseLocked(sent)
		if whole := merge(0, len(sent)); whole != nil {
			e.deliverUpLocked(proto, whole)
			whole.DecRef()
		}
		return
	}
	e.mergedBatches.Add(1)
	next := 0 // sent[next:] may still appear in held, in order
	for i := 0; i < len(e.held); {
		h := e.held[i]
		k := indexFrom(sent, next, h.pkt)
		run := 1
		if k >= 0 {
			next = k + 1
			for i+run < len(e.held) && k+run < len(sent) && e.held[i+run].pkt == sent[k+run] {
				run++
			}
			next = k + run
		}
		if run > 1 {
			if m := merge(k, run); m != nil {
				e.deliverUpLocked(proto, m)
				m.DecRef()
				i += run
				continue
			}
			run = 1
		}
		e.deliverUpLocked(h.proto, h.pkt)
		i += run
	}
	e.releaseLocked(sent)
}

// releaseLocked drops the batch's references: the held packets' and the
// link's to sent.
func (e *groEndpoint) releaseLocked(sent []*gstack.PacketBuffer) {
	for i, h := range e.held {
		h.pkt.DecRef()
		e.held[i] = heldPacket{}
	}
	e.held = e.held[:0]
	for i, pkt := range sent {
		pkt.DecRef()
		sent[i] = nil
	}
}

// indexFrom returns the index of pkt in sent[from:] (as an index of
// sent), or -1.
func indexFrom(sent []*gstack.PacketBuffer, from int, pkt *gstack.PacketBuffer) int {
	for k := from; k < len(sent); k++ {
		if sent[k] == pkt {
			return k
		}
	}
	return -1
}

// samePackets reports whether held are exactly sent, in order. The link
// holds a reference to every sent packet until end, so a pointer cannot be
// reused within the batch.
func samePackets(held []heldPacket, sent []*gstack.PacketBuffer) bool {
	if len(held) != len(sent) {
		return false
	}
	for i, h := range held {
		if h.pkt != sent[i] {
			return false
		}
	}
	return true
}
