// Package peer assembles unplug's peer on one link: the peer's gVisor stack
// (netstack.NewPeer), the fault layer over the link, the NIC (whose resent
// SYN-ACKs carry fresh timestamps, netstack.FreshSYNTimestamps) and the
// peer's addresses. Package stack (the TUN device, or any gVisor link) and
// internal/vlink (the virtual-time link) both build their peer here, so a
// real-clock run and a virtual-clock run test the same peer; they differ
// only in their link and in what drives the services.
package peer

import (
	"fmt"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/unplug-dev/unplug/internal/netstack"
	"github.com/unplug-dev/unplug/stack/fault"
)

// NIC is the id of the peer's only NIC, for code that listens on the peer's
// addresses or changes the NIC's modes (promiscuous, spoofing).
const NIC tcpip.NICID = 1

// Config says how to build a peer. Zero values are the defaults noted.
type Config struct {
	Clock tcpip.Clock // the stack's and the fault rules' clock; required
	// StackSeed makes gVisor's random choices (ISNs, timestamps, IP IDs)
	// reproducible; 0 draws them from crypto/rand, as a real host would.
	StackSeed uint64
	FaultSeed uint64         // loss and jitter draws of the fault rules
	Faults    []fault.Spec   // installed before the first packet
	Observer  fault.Observer // sees every packet crossing the fault layer; nil = none
	// Transparent builds a peer that answers for every address (without
	// HandleLocal; the caller makes the NIC promiscuous).
	Transparent bool
	Addrs       []netip.Addr // the peer's own addresses
	// Above, when set, wraps the fault endpoint in the link the NIC sees:
	// package stack cuts the peer's TCP super-packets into wire segments
	// there, before the fault layer judges them.
	Above func(*fault.Endpoint) stack.LinkEndpoint
}

// Peer is an assembled peer. When Build fails after the stack exists, the
// partial Peer it returns says what the caller has to close.
type Peer struct {
	Stack      *stack.Stack
	Fault      *fault.Endpoint   // the fault layer over the link
	Controller *fault.Controller // its rules
	// NICOwnsLink reports that the NIC took the link: closing the stack
	// closes it. When false the caller still owns the link it passed.
	NICOwnsLink bool
}

// Build assembles the peer on lower. On error it returns nil if nothing was
// built (the caller still owns lower), or the partial Peer: the caller
// closes its Stack, and lower too unless NICOwnsLink.
func Build(lower stack.LinkEndpoint, c Config) (*Peer, error) {
	newStack := netstack.NewPeer
	if c.Transparent {
		newStack = netstack.NewTransparentPeer
	}
	s, err := newStack(c.Clock, c.StackSeed)
	if err != nil {
		return nil, err
	}
	p := &Peer{Stack: s, Controller: fault.NewController(c.Clock, c.FaultSeed)}
	for _, sp := range c.Faults {
		p.Controller.Add(sp)
	}
	p.Fault = fault.NewEndpoint(lower, p.Controller, c.Observer)
	var nic stack.LinkEndpoint = p.Fault
	if c.Above != nil {
		nic = c.Above(p.Fault)
	}
	// Outermost, so that the fault layer, its rules and captures see the
	// SYN-ACKs the wire carries.
	nic = netstack.FreshSYNTimestamps(nic, c.Clock)
	if terr := s.CreateNIC(NIC, nic); terr != nil {
		return p, fmt.Errorf("create the peer's NIC: %s", terr)
	}
	p.NICOwnsLink = true
	for _, a := range c.Addrs {
		if !a.IsValid() || a.Zone() != "" {
			return p, fmt.Errorf("peer address %q: want an IPv4 or IPv6 address without a zone", a)
		}
		if err := netstack.AddAddress(s, NIC, a); err != nil {
			return p, err
		}
	}
	return p, nil
}
