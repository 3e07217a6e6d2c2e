// Package stack assembles unplug's peer: a gVisor netstack whose only NIC is
// the fault layer wrapped around a link, with the peer's services listening
// on it. The link is any gVisor link endpoint (Options.Link): the TUN device
// link (Options.Device) on the real path, vlink's LinkEndpoint in virtual
// time, gVisor's channel endpoint in a test. Packets go up one way, link →
// fault → netstack → services; no layer holds a pointer to one above it. The application under test connects to the peer's address
// through the host kernel; every packet in both directions crosses the fault
// layer, where rules drop, lose or delay it.
//
// Build one with New, read its state with Status, stop it with Close.
package stack

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/unplug-dev/unplug/internal/netaddr"
	"github.com/unplug-dev/unplug/internal/peer"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
	"github.com/unplug-dev/unplug/tun"
)

// The peer's addresses on the TUN link: the benchmarking range and a ULA
// (netaddr.Peer4 and Peer6).
var (
	DefaultAddr4 = netaddr.Peer4
	DefaultAddr6 = netaddr.Peer6
)

const nicID = peer.NIC

// Options configure a peer.
type Options struct {
	// Link is the link the peer runs on: any gVisor link endpoint. The
	// fault layer is attached on top of it; Peer.Close closes it. Give
	// Link or Device, not both.
	Link gstack.LinkEndpoint
	// Device is a TUN device; the peer runs on the device link built on it
	// (read and write loops, offload), which Close closes with the device.
	Device   tun.Device
	Clock    tcpip.Clock    // nil = real time
	Seed     uint64         // loss and jitter draws
	Addr4    netip.Addr     // zero = DefaultAddr4
	Addr6    netip.Addr     // zero = DefaultAddr6
	NoIPv6   bool           // IPv4 only
	Faults   []fault.Spec   // installed at start
	Observer fault.Observer // sees every packet; nil = none
	Services services.Config
	// Transparent terminates TCP connections to any other address too and
	// re-dials their original destination with Services.Dial.
	Transparent bool
}

// Peer is a running netstack on a device.
type Peer struct {
	Stack    *gstack.Stack
	Fault    *fault.Endpoint
	Services *services.Set

	link        *deviceLink // the device link with Options.Device, else nil
	transparent *transparent
	realTime    bool // the stack runs on the real clock: Close may wait
	closeOnce   sync.Once
	closeErr    error
}

// New builds the peer on opts.Link (or the device link on opts.Device) and
// starts its services. On error nothing is left running; the link or device
// is closed. The peer runs until Close: ctx bounds the start only, not the
// services' lifetime (Close ends them and cancels the re-dials of
// intercepted connections under Transparent).
func New(ctx context.Context, opts Options) (_ *Peer, err error) {
	if (opts.Link == nil) == (opts.Device == nil) {
		if opts.Device != nil {
			opts.Device.Close()
		}
		if opts.Link != nil {
			opts.Link.Close()
		}
		return nil, errors.New("stack: Options needs exactly one of Link (a gVisor link endpoint) and Device (a TUN device)")
	}
	// Close waits for FIN exchanges on the real clock only; any other clock
	// (faketime's, vlink's) moves only when its owner moves it.
	realTime := opts.Clock == nil || reflect.TypeOf(opts.Clock) == reflect.TypeOf(tcpip.NewStdClock())
	if opts.Clock == nil {
		opts.Clock = tcpip.NewStdClock()
	}
	if !opts.Addr4.IsValid() {
		opts.Addr4 = DefaultAddr4
	}
	if !opts.Addr6.IsValid() {
		opts.Addr6 = DefaultAddr6
	}
	p := &Peer{realTime: realTime}
	lower := opts.Link
	if opts.Device != nil {
		p.link = newDeviceLink(opts.Device)
		// The segments the link cuts from super-packets carry complete
		// TCP checksums only for observers that record them.
		p.link.checksums = opts.Observer != nil
		lower = p.link
	}
	addrs := []netip.Addr{opts.Addr4}
	if !opts.NoIPv6 {
		addrs = append(addrs, opts.Addr6)
	}
	cfg := peer.Config{
		Clock: opts.Clock, FaultSeed: opts.Seed, Faults: opts.Faults, Observer: opts.Observer,
		Transparent: opts.Transparent, Addrs: addrs,
	}
	if p.link != nil && p.link.offload != nil {
		// On an offload device the peer's TCP sends super-packets; they
		// are cut into wire segments above the fault layer. Inbound, the
		// segments the link cuts from one super-packet go up as a batch:
		// the fault layer judges them one by one, then merges again what
		// passed (fault.Batch). Any other link delivers packet by packet.
		cfg.Above = func(f *fault.Endpoint) gstack.LinkEndpoint {
			return newGSOEndpoint(f, opts.Observer != nil, &p.link.stats)
		}
	}
	// The peer's TCP (RACK off, classic RTO recovery), fault layer, NIC and
	// addresses are assembled as on the virtual link: peer.Build.
	core, err := peer.Build(lower, cfg)
	if core == nil {
		if opts.Device != nil {
			opts.Device.Close()
		} else {
			opts.Link.Close()
		}
		return nil, err
	}
	p.Stack, p.Fault = core.Stack, core.Fault
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	if err != nil {
		if p.link == nil && !core.NICOwnsLink {
			opts.Link.Close() // not the NIC's yet
		}
		return nil, err
	}
	s, ctl := core.Stack, core.Controller
	opts.Services.Addrs = nil // the services listen on exactly the peer's addresses
	for _, a := range addrs {
		opts.Services.Addrs = append(opts.Services.Addrs, tcpip.AddrFromSlice(a.AsSlice()))
	}
	if p.link != nil {
		p.link.start()
	}
	opts.Services.Faults = ctl // personas install their rules here
	p.Services, err = services.Start(ctx, s, nicID, opts.Services)
	if err != nil {
		return nil, err
	}
	if opts.Transparent {
		if err := p.enableTransparent(opts.Services.Dial, opts.Services.Logf); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Controller returns the peer's fault rules.
func (p *Peer) Controller() *fault.Controller { return p.Fault.Controller() }

// closeGrace bounds how long Close lets FIN exchanges finish: a round trip
// on the local link, with room for a loaded machine. A connection that
// stays half-closed (its client keeps its end open) costs it once.
const closeGrace = time.Second

// settleQuiet is how long the link must have carried nothing, with no FIN
// exchange in progress, before Close goes on: long enough for a FIN the
// client just sent to be read from the device.
const settleQuiet = 20 * time.Millisecond

// Close lets FIN exchanges in progress finish (a client that closed gets
// its clean close; at most closeGrace, real clock only), stops the services
// (connections still open are reset: the peer goes away), disables the NIC
// so that tearing the stack down sends nothing more (no RST from TIME_WAIT
// after a clean close), closes the device and waits for every goroutine.
// Observers have seen every packet when Close returns. It is safe to call
// more than once.
func (p *Peer) Close() error {
	p.closeOnce.Do(func() {
		if p.realTime {
			p.settle(closeGrace)
		}
		if p.Services != nil {
			p.closeErr = p.Services.Close()
		}
		if p.transparent != nil {
			p.transparent.stop()
		}
		p.Stack.DisableNIC(nicID)
		p.Stack.Close()
		if p.link != nil {
			if err := p.link.stop(); err != nil && p.closeErr == nil {
				p.closeErr = err
			}
		} else {
			p.Fault.Close() // drops held packets, closes opts.Link
		}
		p.Stack.Wait()
	})
	return p.closeErr
}

// settle waits, at most grace, until no TCP endpoint is in the middle of a
// FIN exchange (or a handshake) and the link has been idle for settleQuiet.
func (p *Peer) settle(grace time.Duration) {
	const poll = 5 * time.Millisecond
	deadline := time.Now().Add(grace)
	last, quietFor := p.linkPackets(), time.Duration(0)
	for quietFor < settleQuiet && time.Now().Before(deadline) {
		time.Sleep(poll)
		n := p.linkPackets()
		if n != last || p.closing() {
			last, quietFor = n, 0
			continue
		}
		quietFor += poll
	}
}

// linkPackets counts the packets the fault layer has seen both ways.
func (p *Peer) linkPackets() uint64 {
	st := p.Fault.Stats()
	return st.In.Load() + st.Out.Load()
}

// closing reports whether a TCP endpoint has a FIN exchange or a handshake
// in progress: one that ends by itself within a few round trips.
func (p *Peer) closing() bool {
	for _, ep := range p.Stack.RegisteredEndpoints() {
		e, ok := ep.(*tcp.Endpoint)
		if !ok {
			continue
		}
		switch tcp.EndpointState(e.State()) {
		case tcp.StateSynSent, tcp.StateSynRecv, tcp.StateFinWait1, tcp.StateFinWait2,
			tcp.StateCloseWait, tcp.StateClosing, tcp.StateLastAck:
			return true
		}
	}
	return false
}
