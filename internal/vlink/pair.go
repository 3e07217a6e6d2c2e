package vlink

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/unplug-dev/unplug/internal/netaddr"
	"github.com/unplug-dev/unplug/internal/netstack"
	"github.com/unplug-dev/unplug/internal/peer"
	"github.com/unplug-dev/unplug/stack/fault"
)

// The client's addresses: the host side of unplug's TUN network, where the
// kernel sits on the real path.
var (
	ClientAddr4 = netaddr.Host4
	ClientAddr6 = netaddr.Host6
)

// The peer's addresses, the same as on the TUN path.
var (
	PeerAddr4 = netaddr.Peer4
	PeerAddr6 = netaddr.Peer6
)

// nicID is the only NIC of either stack.
const nicID = peer.NIC

// NIC is the id of either stack's only NIC, for code that listens on the
// peer's addresses itself (services.NewPoller).
const NIC = nicID

// firstClientPort is where Dial starts handing out local ports (the start of
// the IANA ephemeral range): fixed ports keep runs reproducible.
const firstClientPort = 49152

// ErrLimit is wrapped by RunUntil when the condition did not hold within the
// virtual time limit.
var ErrLimit = errors.New("condition not met within the virtual time limit")

// errClosed is returned by operations on a closed Pair.
var errClosed = errors.New("the pair is closed")

// PairOptions configure a Pair.
type PairOptions struct {
	Delay    time.Duration  // one-way link delay; 0 = packets arrive at the instant they are sent
	Seed     uint64         // the fault controller's loss and jitter draws
	Faults   []fault.Spec   // rules installed at virtual time zero
	Observer fault.Observer // sees every packet crossing the fault layer; nil = none
	MTU      uint32         // link MTU; 0 = DefaultMTU
}

// Pair is a client stack and a peer stack on one virtual clock, joined by a
// Link whose peer end sits under the fault layer, as the TUN device does on
// the real path. It is driven from one goroutine: operate on sockets (Dial,
// Conn, Listener), then Settle, Step, Advance or RunUntil to let time pass.
// Pair is not safe for concurrent use.
type Pair struct {
	Clock  *Clock            // the one clock both stacks, the link and the fault rules run on
	Client *stack.Stack      // plays the host kernel: ClientAddr4, ClientAddr6
	Peer   *stack.Stack      // unplug's peer: PeerAddr4, PeerAddr6
	Faults *fault.Controller // the peer's fault rules; add and remove them at any instant
	Fault  *fault.Endpoint   // the peer's NIC: the fault layer over PeerLink

	ClientLink *LinkEndpoint // the client stack's end of the link
	PeerLink   *LinkEndpoint // the peer's end, under Fault

	nextPort  uint16
	seen      [2]uint64 // per stack: IP packets received at the last barrier
	barriers  uint64
	closed    bool
	closeOnce sync.Once
}

// NewPair builds both stacks on a fresh Clock at virtual time zero, links
// them, and installs opts.Faults.
func NewPair(opts PairOptions) (_ *Pair, err error) {
	clock := NewClock()
	clientEnd, peerEnd := NewLink(clock, opts.Delay, opts.MTU)
	p := &Pair{Clock: clock, ClientLink: clientEnd, PeerLink: peerEnd, nextPort: firstClientPort}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	// Distinct non-zero seeds: both stacks' random choices (ISNs, timestamps)
	// are reproducible from opts.Seed, and differ from each other.
	if p.Client, err = netstack.New(clock, 2*opts.Seed+1); err != nil {
		return nil, fmt.Errorf("client stack: %w", err)
	}
	// The peer is assembled as on the TUN path (peer.Build: RACK off, the
	// fault layer over the link, the same addresses).
	core, err := peer.Build(peerEnd, peer.Config{
		Clock: clock, StackSeed: 2*opts.Seed + 2, FaultSeed: opts.Seed,
		Faults: opts.Faults, Observer: opts.Observer,
		Addrs: []netip.Addr{PeerAddr4, PeerAddr6},
	})
	if core != nil {
		p.Peer, p.Faults, p.Fault = core.Stack, core.Controller, core.Fault
	}
	if err != nil {
		return nil, fmt.Errorf("peer: %w", err)
	}
	// The client stands in for a kernel's TCP: its resent SYNs carry the
	// current timestamp, as Linux's do (gVisor resends the first's).
	if terr := p.Client.CreateNIC(nicID, netstack.FreshSYNTimestamps(clientEnd, clock)); terr != nil {
		return nil, fmt.Errorf("create client NIC: %s", terr)
	}
	for _, a := range []netip.Addr{ClientAddr4, ClientAddr6} {
		if err := netstack.AddAddress(p.Client, nicID, a); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
	}
	return p, nil
}

// Now returns the virtual time since the pair was built.
func (p *Pair) Now() time.Duration { return p.Clock.Elapsed() }

// InFlight returns the packets on the link in either direction plus those
// held by delay rules.
func (p *Pair) InFlight() int {
	return p.ClientLink.Stats().InFlight + p.PeerLink.Stats().InFlight + p.Fault.Pending()
}

// Barriers returns how many times the driver has waited for gVisor's
// goroutines; benchmarks and tests use it to see the driver's cost.
func (p *Pair) Barriers() uint64 { return p.barriers }

// Settle runs everything due at the current instant until nothing is left:
// it waits for both stacks' TCP processors to go idle, fires the timers due
// now (packets sent with zero delay, zero-length timers) one at a time, and
// waits again after each one that delivered packets. Virtual time does not
// move. See the package documentation for why the driver waits.
func (p *Pair) Settle() {
	if p.closed {
		return
	}
	p.barrier(true)
	for p.Clock.FireNext(p.Clock.Elapsed()) {
		p.barrier(false)
	}
}

// Step settles, moves the clock to the earliest armed timer, fires every
// timer due at that instant (one at a time, waiting for gVisor in between)
// and settles again. It reports false, without moving time, when no timer is
// armed: nothing will ever happen again unless a socket is operated.
func (p *Pair) Step() (advanced bool) {
	if p.closed {
		return false
	}
	p.Settle()
	at, ok := p.Clock.Next()
	if !ok {
		return false
	}
	p.advanceTo(at)
	return true
}

// AdvanceTo lets virtual time run until t (since the start), firing every
// timer on the way in order and settling after each, then leaves the clock at
// t. A t in the past only settles.
func (p *Pair) AdvanceTo(t time.Duration) {
	if p.closed {
		return
	}
	p.Settle()
	p.advanceTo(t)
}

// Advance lets d of virtual time pass; see AdvanceTo.
func (p *Pair) Advance(d time.Duration) { p.AdvanceTo(p.Now() + d) }

func (p *Pair) advanceTo(t time.Duration) {
	for p.Clock.FireNext(t) {
		p.barrier(false)
	}
	p.Clock.AdvanceTo(t)
}

// RunUntil steps until cond holds, checking it once after every settled
// instant. cond may operate sockets, and what it causes is settled before
// the next check; it should do all it can in one call (read until
// ErrWouldBlock, for example), because time moves on between calls and stops
// moving only at the limit. RunUntil returns an error wrapping ErrLimit if
// cond still does not hold once limit of virtual time has passed; the clock
// then stands at the limit.
func (p *Pair) RunUntil(cond func() bool, limit time.Duration) error {
	if p.closed {
		return errClosed
	}
	deadline := p.Now() + limit
	for {
		p.Settle()
		if cond() {
			return nil
		}
		at, ok := p.Clock.Next()
		if !ok || at > deadline {
			p.advanceTo(deadline)
			p.Settle()
			if cond() {
				return nil
			}
			if !ok {
				return fmt.Errorf("run until %v: %w (nothing left scheduled)", deadline, ErrLimit)
			}
			return fmt.Errorf("run until %v: %w", deadline, ErrLimit)
		}
		p.advanceTo(at)
	}
}

// barrier waits until neither stack has TCP work queued or running. With
// force false it skips a stack that received no packets since its last
// barrier: such a stack has nothing queued (see the package documentation).
func (p *Pair) barrier(force bool) {
	for i, s := range [...]*stack.Stack{p.Client, p.Peer} {
		rx := s.Stats().IP.PacketsReceived.Value()
		if !force && rx == p.seen[i] {
			continue
		}
		p.seen[i] = rx
		// Pause returns once every TCP processor goroutine has drained its
		// queue and parked; Resume lets them run again.
		s.Pause()
		s.Resume()
		p.barriers++
	}
}

// Close aborts every connection, stops both stacks and waits for their
// goroutines; packets still on the wire are discarded. It is safe to call
// more than once.
func (p *Pair) Close() {
	p.closeOnce.Do(func() {
		p.closed = true
		for _, s := range []*stack.Stack{p.Client, p.Peer} {
			if s != nil {
				s.Close()
			}
		}
		for _, s := range []*stack.Stack{p.Client, p.Peer} {
			if s != nil {
				s.Wait()
			}
		}
	})
}
