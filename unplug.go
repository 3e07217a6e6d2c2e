// Package unplug runs your TCP client against a peer whose network fails on
// command, from a Go test. New builds the peer for one test: a gVisor
// netstack behind unplug's fault layer, serving http (port 80), echo (7),
// discard (9), sink (5001, never reads) and source (5002, writes forever).
// Dial it with the returned Peer's DialContext (it fits
// http.Transport.DialContext and anything else that takes a dialer), add
// and remove fault rules while the test runs, and the peer goes away with
// the test.
//
//	func TestClientSurvivesOutage(t *testing.T) {
//		p := unplug.New(t, unplug.Options{Clock: unplug.Virtual})
//		c := &http.Client{Transport: &http.Transport{DialContext: p.DialContext}}
//		p.AddFault("drop for=3s") // the next 3 s of packets vanish
//		resp, err := c.Get("http://" + p.Addr(80) + "/")
//		...
//	}
//
// Start and Close do the same outside a test.
//
// Two clocks:
//
//   - Virtual: the client is a gVisor TCP stack too, on a virtual clock that
//     only moves while the client waits on the peer, so minutes of
//     retransmission backoff take milliseconds, and with one goroutine
//     doing the I/O a run is the same every time. Needs nothing.
//   - Real: the client is the host kernel's TCP, in a private network
//     namespace the test creates (root, or unprivileged user namespaces),
//     reaching the peer through a TUN device; time is wall time. Linux
//     only; New skips the test where namespaces are not available.
//
// The rule grammar is fault.ParseSpec's (docs/fault-rules.md): "drop",
// "drop dir=in for=3s", "loss 20%", "delay 200ms", "reject port=80",
// "rst-at-seq=100000" …
package unplug

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/internal/netaddr"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/tun"
)

func init() {
	// Real mode re-executes the test binary as its namespace agent; the
	// agent must take over before the test's main runs. This returns at
	// once in every other process.
	tun.RunAgentIfRequested()
}

// Clock selects what the client is and how time passes; see the package
// documentation.
type Clock int

// Clocks.
const (
	// Virtual is a gVisor client on a virtual clock (the default).
	Virtual Clock = iota
	// Real is the host kernel's TCP in a private network namespace.
	Real
)

// String returns "virtual" or "real".
func (c Clock) String() string {
	switch c {
	case Virtual:
		return "virtual"
	case Real:
		return "real"
	}
	return "Clock(" + strconv.Itoa(int(c)) + ")"
}

// Options configure New.
type Options struct {
	// Clock is Virtual (the zero value) or Real.
	Clock Clock
	// Faults are rules installed before anything connects, in
	// fault.ParseSpec's grammar; their after= and for= count from New.
	Faults []string
	// Seed makes loss and jitter draws (and, in virtual time, every
	// random choice of both stacks) reproducible; 0 means 1.
	Seed uint64
	// Delay is the link's one-way delay in virtual time (0: packets arrive
	// at the instant they are sent, so TCP gets no RTT sample and its RTO
	// starts at 1 s). Real mode has the TUN's own sub-millisecond delay.
	Delay time.Duration
}

// Peer is a running peer. Its methods may be called from any goroutine; in
// virtual time, calls are served one at a time.
type Peer struct {
	t     testing.TB // set by New: AddFault and RemoveFault fail it
	clock Clock
	w     world
}

// world is what a clock provides.
type world interface {
	dial(ctx context.Context, ap netip.AddrPort) (net.Conn, error)
	faults() *fault.Controller
	sleep(d time.Duration)
	now() time.Duration
	close() error
}

// ErrUnavailable is wrapped by Start when the machine cannot run the Real
// clock (no network namespaces or TUN devices for this user, not Linux);
// New skips the test then.
var ErrUnavailable = errors.New("unplug: the Real clock is not available here")

// New starts a peer for t (Start) and stops it in t's cleanup. A bad
// Options (an unparseable fault rule) fails t; a Real clock where network
// namespaces are not available skips t with the reason. AddFault and
// RemoveFault on the returned Peer fail t on a bad rule or id.
func New(t testing.TB, opts Options) *Peer {
	t.Helper()
	p, err := Start(opts)
	if errors.Is(err, ErrUnavailable) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	p.t = t
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("unplug: stop the peer: %v", err)
		}
	})
	return p
}

// Start starts a peer outside a test's lifetime; Close stops it. New is
// the form for tests.
func Start(opts Options) (*Peer, error) {
	if opts.Seed == 0 {
		opts.Seed = 1
	}
	specs := make([]fault.Spec, 0, len(opts.Faults))
	for _, s := range opts.Faults {
		sp, err := fault.ParseSpec(s)
		if err != nil {
			return nil, fmt.Errorf("unplug: Options.Faults: %w", err)
		}
		specs = append(specs, sp)
	}
	var w world
	var err error
	switch opts.Clock {
	case Virtual:
		w, err = newVirtual(opts, specs)
	case Real:
		w, err = newReal(opts, specs)
	default:
		return nil, fmt.Errorf("unplug: unknown %v; use unplug.Virtual or unplug.Real", opts.Clock)
	}
	if err != nil {
		return nil, fmt.Errorf("unplug (%v clock): %w", opts.Clock, err)
	}
	return &Peer{clock: opts.Clock, w: w}, nil
}

// Close stops the peer: its services, its stacks and (Real) the network
// namespace. Connections still open fail. It is safe to call more than once.
func (p *Peer) Close() error { return p.w.close() }

// Clock returns the peer's clock.
func (p *Peer) Clock() Clock { return p.clock }

// Addr returns the peer's address for port, "198.18.0.2:80", to put in a
// URL or pass to DialContext.
func (p *Peer) Addr(port uint16) string {
	return netip.AddrPortFrom(netaddr.Peer4, port).String()
}

// DialContext connects to the peer at address (Addr's form; only the
// peer's own addresses are reachable) over TCP. Its signature is
// net.Dialer.DialContext's, so it plugs into http.Transport and most
// clients. In virtual time, ctx and the connection's deadlines are honoured
// in virtual time: a deadline d from now passes after d of virtual time.
func (p *Peer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4":
	default:
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("unplug's peer serves tcp (IPv4), not %q", network)}
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil || ap.Addr() != netaddr.Peer4 {
		return nil, &net.OpError{Op: "dial", Net: network,
			Err: fmt.Errorf("%q is not the peer's address; dial p.Addr(port), e.g. %s", address, p.Addr(80))}
	}
	return p.w.dial(ctx, ap)
}

// AddFault installs a rule (fault.ParseSpec's grammar) and returns its id;
// after= and for= count from now. A malformed rule is an error, and fails
// the test of a Peer from New.
func (p *Peer) AddFault(spec string) (int, error) {
	id, err := p.w.faults().AddString(spec)
	if err != nil {
		err = fmt.Errorf("unplug: AddFault: %w", err)
		p.fail(err)
	}
	return id, err
}

// RemoveFault removes the rule with the given id. An unknown id is an
// error, and fails the test of a Peer from New.
func (p *Peer) RemoveFault(id int) error {
	err := p.w.faults().Remove(id)
	if err != nil {
		err = fmt.Errorf("unplug: RemoveFault: %w", err)
		p.fail(err)
	}
	return err
}

// fail fails the test of a Peer from New.
func (p *Peer) fail(err error) {
	if p.t != nil {
		p.t.Helper()
		p.t.Fatal(err)
	}
}

// Faults returns the installed rules with what each has matched, dropped
// and delayed so far.
func (p *Peer) Faults() []fault.RuleStatus { return p.w.faults().Status() }

// Controller returns the peer's fault controller, for what AddFault does
// not cover (literal fault.Spec values, Clear, counters).
func (p *Peer) Controller() *fault.Controller { return p.w.faults() }

// Sleep lets d pass: virtual time with everything in it (retransmissions,
// timeouts) in virtual mode, wall time in real mode.
func (p *Peer) Sleep(d time.Duration) { p.w.sleep(d) }

// Now returns how long the peer has run, on its clock.
func (p *Peer) Now() time.Duration { return p.w.now() }
