// Package netstack builds the gVisor stacks unplug runs: the peer, on
// whatever link carries its packets (the TUN device in package stack, the
// in-process virtual link in internal/vlink), and the virtual-time client. It
// holds the TCP configuration the peer has on every link, so a real-time
// run and a virtual-time run exercise the same peer, and the one fix of
// gVisor's TCP made on the wire (FreshSYNTimestamps). It knows nothing of
// devices, fault rules or services.
package netstack

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// New returns a gVisor stack with IPv4, IPv6, TCP, UDP and ICMP on clock,
// configured like a host: SACK on, standard RTO bounds. A non-zero seed
// makes the stack's random choices (initial sequence numbers, TCP
// timestamps, IP IDs) reproducible, so virtual-time runs are
// byte-identical; seed 0 draws them from crypto/rand as a real host would.
func New(clock tcpip.Clock, seed uint64) (*stack.Stack, error) {
	return newStack(clock, seed, true)
}

// newStack is New; handleLocal loops packets to the stack's own addresses
// back inside it. A transparent peer turns it off: its NIC is promiscuous,
// so every address counts as its own, and gVisor would drop each arriving
// packet as having a local source.
func newStack(clock tcpip.Clock, seed uint64, handleLocal bool) (*stack.Stack, error) {
	opts := stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		Clock:              clock,
		HandleLocal:        handleLocal,
	}
	if seed != 0 {
		opts.RandSource = &lockedSource{src: rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)}
		opts.SecureRNG = rand.NewChaCha8(seedBytes(seed))
	}
	s := stack.New(opts)
	sack := tcpip.TCPSACKEnabled(true)
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		s.Close()
		return nil, fmt.Errorf("enable SACK: %s", err)
	}
	return s, nil
}

// NewPeer is New plus the peer's own TCP configuration (ConfigurePeer):
// the stack unplug's peer runs on, whichever link it sits on.
func NewPeer(clock tcpip.Clock, seed uint64) (*stack.Stack, error) {
	return newPeer(clock, seed, true)
}

// NewTransparentPeer is NewPeer for a peer that answers for every address
// (a promiscuous NIC): without HandleLocal, since with it gVisor drops every
// arriving packet as coming from one of its own addresses.
func NewTransparentPeer(clock tcpip.Clock, seed uint64) (*stack.Stack, error) {
	return newPeer(clock, seed, false)
}

func newPeer(clock tcpip.Clock, seed uint64, handleLocal bool) (*stack.Stack, error) {
	s, err := newStack(clock, seed, handleLocal)
	if err != nil {
		return nil, err
	}
	if err := ConfigurePeer(s); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// ConfigurePeer applies the peer's TCP settings to s. RACK is off: in this
// gVisor version a lost tail-loss probe can leave a sender with
// unacknowledged data and no timer at all, so a real application would
// wait forever for the peer's last bytes. The mechanism, as read in the
// source (transport/tcp): after a probe, (*sender).postXmit arms the
// retransmission timer only if s.Outstanding > 0, and during SACK recovery
// (*sender).SetPipe recounts Outstanding stopping at the first segment
// without payload, so a lone FIN (or a FIN behind SACKed data) counts 0;
// schedulePTO has already disabled the RTO timer, the probe is lost, and
// nothing fires again (seen as LAST-ACK with Timeouts 0 in cmd/unplug's
// TestSoak). Classic RTO recovery never stalls. Turning RACK on needs a
// patched copy of gVisor's TCP. The virtual-time client keeps RACK: its
// timings are the ones FACTS.md documents for a Linux sender.
func ConfigurePeer(s *stack.Stack) error {
	noRACK := tcpip.TCPRecovery(0)
	if terr := s.SetTransportProtocolOption(tcp.ProtocolNumber, &noRACK); terr != nil {
		return fmt.Errorf("disable RACK: %s", terr)
	}
	return nil
}

// AddAddress assigns addr to nic and routes everything of its family through
// nic (without routes the peer cannot answer: SYN-ACKs never leave).
func AddAddress(s *stack.Stack, nic tcpip.NICID, addr netip.Addr) error {
	proto, bits := header.IPv4ProtocolNumber, 32
	if addr.Is6() {
		proto, bits = header.IPv6ProtocolNumber, 128
	}
	pa := tcpip.ProtocolAddress{
		Protocol:          proto,
		AddressWithPrefix: tcpip.AddrFromSlice(addr.AsSlice()).WithPrefix(),
	}
	pa.AddressWithPrefix.PrefixLen = bits
	if err := s.AddProtocolAddress(nic, pa, stack.AddressProperties{}); err != nil {
		return fmt.Errorf("add address %s: %s", addr, err)
	}
	var route tcpip.Route
	if addr.Is6() {
		route = tcpip.Route{Destination: header.IPv6EmptySubnet, NIC: nic}
	} else {
		route = tcpip.Route{Destination: header.IPv4EmptySubnet, NIC: nic}
	}
	s.AddRoute(route)
	return nil
}

// lockedSource adapts a math/rand/v2 source to the thread-safe
// math/rand.Source gVisor wants.
type lockedSource struct {
	mu  sync.Mutex
	src rand.Source
}

func (l *lockedSource) Int63() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int64(l.src.Uint64() >> 1)
}

func (l *lockedSource) Seed(int64) {}

func seedBytes(seed uint64) (b [32]byte) {
	for i := range 4 {
		binary.LittleEndian.PutUint64(b[i*8:], seed+uint64(i)*0x9e3779b97f4a7c15)
	}
	return b
}
