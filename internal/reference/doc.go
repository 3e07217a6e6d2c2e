// Package reference runs unplug's scenarios the way the seed blog post did
// — no unplug at all — so unplug's results can be checked against it: two
// private network namespaces joined by a veth pair, a plain TCP server in
// one, the kernel client in the other, and the outage made with
// `iptables -A INPUT -p tcp --dport 8000 -j DROP` inside the server's
// namespace. The client does what the scenario's client does (the same
// calls, socket options and per-namespace sysctls); a packet socket on the
// client's veth records every segment with kernel timestamps, and the same
// classifier unplug uses (internal/flow) tells retransmissions and
// probes apart.
//
// NewLab builds the namespaces (root and iptables needed; Linux only),
// Lab.Run runs one scenario and returns its Series, FromReport reduces an
// unplug report to a Series with the same definitions, and Compare lines
// the two up with exact mechanism rows and timing rows whose tolerance
// comes from the kernel's timer wheel (Tolerance). Lab.Close removes
// everything.
package reference

// Scenarios lists the scenarios the reference can run.
var Scenarios = []string{"timeout", "brief-outage", "sendbuf-full", "keepalive", "syn-timeout"}

// ServerPort is the port the reference server listens on and the iptables
// rule drops, as in the seed.
const ServerPort = 8000
