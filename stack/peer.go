// Package stack assembles unplug's peer: a gVisor netstack whose only NIC is
// the fault layer wrapped around a packet device, with the peer's services
// listening on it. The application under test connects to the peer's address
// through the host kernel; every packet in both directions crosses the fault
// layer, where rules drop, lose or delay it.
//
// Build one with New, read its state with Status, stop it with Close.
package stack

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
	"github.com/unplug-dev/unplug/tun"
)

// The peer's addresses on the TUN link: the benchmarking range and a ULA.
var (
	DefaultAddr4 = netip.MustParseAddr("198.18.0.2")
	DefaultAddr6 = netip.MustParseAddr("fd00:198:18::2")
)

const nicID tcpip.NICID = 1

// Options configure a peer.
type Options struct {
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

	link        *deviceLink
	transparent *transparent
	closeOnce   sync.Once
	closeErr    error
}

// NewNetstack returns a gVisor stack with IPv4, IPv6, TCP, UDP and ICMP on
// clock, configured like a host: SACK on, standard RTO bounds. A non-zero
// seed makes the stack's random choices (initial sequence numbers, TCP
// timestamps, IP IDs) reproducible, so virtual-time runs are byte-identical;
// seed 0 draws them from crypto/rand as a real host would.
func NewNetstack(clock tcpip.Clock, seed uint64) (*gstack.Stack, error) {
	return newNetstack(clock, seed, true)
}

// newNetstack is NewNetstack; handleLocal loops packets to the stack's own
// addresses back inside it. A transparent peer must turn it off: its NIC is
// promiscuous, so every address counts as its own, and gVisor would drop
// each arriving packet as having a local source.
func newNetstack(clock tcpip.Clock, seed uint64, handleLocal bool) (*gstack.Stack, error) {
	opts := gstack.Options{
		NetworkProtocols:   []gstack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []gstack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		Clock:              clock,
		HandleLocal:        handleLocal,
	}
	if seed != 0 {
		opts.RandSource = &lockedSource{src: rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)}
		opts.SecureRNG = rand.NewChaCha8(seedBytes(seed))
	}
	s := gstack.New(opts)
	sack := tcpip.TCPSACKEnabled(true)
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		s.Close()
		return nil, fmt.Errorf("enable SACK: %s", err)
	}
	return s, nil
}

// AddAddress assigns addr to nic and routes everything of its family through
// nic (without routes the peer cannot answer: SYN-ACKs never leave).
func AddAddress(s *gstack.Stack, nic tcpip.NICID, addr netip.Addr) error {
	proto, bits := header.IPv4ProtocolNumber, 32
	if addr.Is6() {
		proto, bits = header.IPv6ProtocolNumber, 128
	}
	pa := tcpip.ProtocolAddress{
		Protocol:          proto,
		AddressWithPrefix: tcpip.AddrFromSlice(addr.AsSlice()).WithPrefix(),
	}
	pa.AddressWithPrefix.PrefixLen = bits
	if err := s.AddProtocolAddress(nic, pa, gstack.AddressProperties{}); err != nil {
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

// New builds the peer on opts.Device and starts its services. On error nothing
// is left running; the device is closed.
func New(ctx context.Context, opts Options) (_ *Peer, err error) {
	if opts.Clock == nil {
		opts.Clock = tcpip.NewStdClock()
	}
	if !opts.Addr4.IsValid() {
		opts.Addr4 = DefaultAddr4
	}
	if !opts.Addr6.IsValid() {
		opts.Addr6 = DefaultAddr6
	}
	s, err := newNetstack(opts.Clock, 0, !opts.Transparent)
	if err != nil {
		opts.Device.Close()
		return nil, err
	}
	// Without RACK: in this gVisor version a lost tail-loss probe can leave
	// a sender with unacknowledged data and no retransmission timer (see
	// cmd/unplug/soak_linux_test.go), so a real application would
	// wait forever for the peer's last bytes. Classic RTO recovery never
	// stalls. The virtual-time client keeps RACK: its timings are the
	// ones docs/facts.md documents.
	noRACK := tcpip.TCPRecovery(0)
	if terr := s.SetTransportProtocolOption(tcp.ProtocolNumber, &noRACK); terr != nil {
		s.Close()
		opts.Device.Close()
		return nil, fmt.Errorf("disable RACK: %s", terr)
	}
	p := &Peer{Stack: s, link: newDeviceLink(opts.Device)}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	ctl := fault.NewController(opts.Clock, opts.Seed)
	for _, sp := range opts.Faults {
		ctl.Add(sp)
	}
	// On an offload device the segments the link cuts from one
	// super-packet go up as a batch: the fault layer judges them one by
	// one, then merges again what passed (fault.Batch).
	p.link.checksums = opts.Observer != nil
	p.Fault = fault.NewEndpoint(p.link, ctl, opts.Observer)
	var nicEP gstack.LinkEndpoint = p.Fault
	if p.link.offload != nil {
		// The peer's TCP sends super-packets; they are cut into wire
		// segments above the fault layer.
		nicEP = newGSOEndpoint(p.Fault, opts.Observer != nil, &p.link.stats)
	}
	if err := s.CreateNIC(nicID, nicEP); err != nil {
		return nil, fmt.Errorf("create NIC: %s", err)
	}
	addrs := []netip.Addr{opts.Addr4}
	if !opts.NoIPv6 {
		addrs = append(addrs, opts.Addr6)
	}
	opts.Services.Addrs = nil // the services listen on exactly the peer's addresses
	for _, a := range addrs {
		if err := AddAddress(s, nicID, a); err != nil {
			return nil, err
		}
		opts.Services.Addrs = append(opts.Services.Addrs, tcpip.AddrFromSlice(a.AsSlice()))
	}
	p.link.start()
	opts.Services.Faults = ctl // personas install their rules here
	p.Services, err = services.Start(ctx, s, nicID, opts.Services)
	if err != nil {
		return nil, err
	}
	if opts.Transparent {
		if err := p.enableTransparent(ctx, opts.Services.Dial, opts.Services.Logf); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Controller returns the peer's fault rules.
func (p *Peer) Controller() *fault.Controller { return p.Fault.Controller() }

// Close stops the services, removes the NIC, closes the device and waits for
// every goroutine. It is safe to call more than once.
func (p *Peer) Close() error {
	p.closeOnce.Do(func() {
		if p.Services != nil {
			p.closeErr = p.Services.Close()
		}
		p.Stack.Close()
		if p.transparent != nil {
			p.transparent.stop()
		}
		if err := p.link.stop(); err != nil && p.closeErr == nil {
			p.closeErr = err
		}
		p.Stack.Wait()
	})
	return p.closeErr
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
