// Package services runs the TCP services that unplug's peer, a gVisor
// netstack, offers to the applications under test: a tiny HTTP server, echo,
// discard, a sink that never reads, a source that never stops writing, and
// port forwards to real hosts.
//
// The caller assembles the stack (NIC, addresses, routes), then calls Start
// with the NIC id and a Config; the returned Set serves until Close. Stats and Conns report what the services are doing,
// including gVisor's view of each connection (RTT, RTO, cwnd, retransmits),
// for `unplug status`.
//
// Each built-in service is a session (session.go): a state machine over the
// connection's non-blocking gVisor endpoint. Set runs it on a goroutine per
// connection that steps it and waits for the endpoint's next event; Poller
// steps every connection from the virtual-time driver between clock steps.
// Real-time and virtual-time runs are thus served by the same code; only
// forwards (real dials) and personas (wall-clock pacing) need Set.
//
// Listeners are built from raw gVisor endpoints rather than gonet.ListenTCP
// because gonet.TCPConn hides its endpoint; keeping the endpoint is what lets
// Conns read tcpip.TCPInfoOption and Close reset connections.
package services

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/unplug-dev/unplug/internal/netaddr"
	"github.com/unplug-dev/unplug/stack/fault"
)

// Service names, as they appear in Stats, Conns and error messages.
const (
	ServiceHTTP    = "http"
	ServiceEcho    = "echo"
	ServiceDiscard = "discard"
	ServiceSink    = "sink"
	ServiceSource  = "source"
	ServiceForward = "forward"
)

// Default ports of the built-in services.
const (
	DefaultHTTPPort    = 80
	DefaultEchoPort    = 7
	DefaultDiscardPort = 9
	DefaultSinkPort    = 5001
	DefaultSourcePort  = 5002
)

// Default listen addresses: the peer's side of unplug's TUN network
// (netaddr.Peer4 and Peer6).
var (
	DefaultAddrV4 = tcpip.AddrFrom4(netaddr.Peer4.As4())
	DefaultAddrV6 = tcpip.AddrFrom16(netaddr.Peer6.As16())
)

// listenBacklog is how many handshakes and unaccepted connections a
// service's listener holds. gVisor answers SYNs beyond it with SYN cookies,
// and its cookie path (pinned version) creates a second, never-closing
// ESTABLISHED endpoint for about a third of the connections whose
// handshake ACK and first data segment both reach the listener (800
// connections through 1-50 ms of jitter left 330 behind; none without
// cookies). Ten thousand clients connecting at once must not get there.
const listenBacklog = 65535

// Config selects which services run and where.
type Config struct {
	// Ports of the built-in services; 0 disables a service. See DefaultConfig.
	HTTP, Echo, Discard, Sink, Source int
	// Forwards splices connections to a port on the peer to real hosts.
	Forwards []Forward
	// Addrs are the addresses to listen on, IPv4 and/or IPv6; every service
	// listens on each. They must already be assigned to the NIC.
	Addrs []tcpip.Address
	// Dial connects forwards to their targets; nil means a zero net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logf reports events worth a human's attention (failed forward dials,
	// listeners that stopped); nil discards them.
	Logf func(format string, args ...any)
	// Persona makes the whole peer misbehave (silent, reboot, half-open,
	// slow-reader; see persona.go); the zero Persona is the ordinary peer.
	Persona Persona
	// Faults are the peer's fault rules, where personas install theirs;
	// the peer (stack.New) sets it.
	Faults *fault.Controller
}

// DefaultConfig returns every built-in service on its usual port, listening
// on 198.18.0.2 and fd00:198:18::2, with no forwards.
func DefaultConfig() Config {
	return Config{
		HTTP:    DefaultHTTPPort,
		Echo:    DefaultEchoPort,
		Discard: DefaultDiscardPort,
		Sink:    DefaultSinkPort,
		Source:  DefaultSourcePort,
		Addrs:   []tcpip.Address{DefaultAddrV4, DefaultAddrV6},
	}
}

// service is one configured service: a name, a port, a handler and counters
// shared by all its listeners and connections.
type service struct {
	name   string
	port   uint16
	target string // forwards only
	handle func(s *Set, c *conn)
	addrs  []netip.AddrPort

	accepted   atomic.Uint64
	active     atomic.Int64
	bytesIn    atomic.Uint64
	bytesOut   atomic.Uint64
	dialErrors atomic.Uint64
}

// listener is one listening gVisor endpoint.
type listener struct {
	svc  *service
	ep   tcpip.Endpoint
	wq   *waiter.Queue
	addr netip.AddrPort
}

// Set is a running group of services. It is safe for concurrent use.
type Set struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	logf func(format string, args ...any)

	services  []*service
	listeners []*listener

	wg        sync.WaitGroup
	done      chan struct{}
	closeOnce sync.Once

	persona personaState

	mu      sync.Mutex
	closed  bool
	conns   map[*conn]struct{}
	nextID  uint64
	changed chan struct{} // closed and replaced whenever a conn comes or goes
}

// Start listens on every enabled port on every address in cfg.Addrs and
// serves until Close. ctx bounds the start only (a cancelled ctx starts
// nothing); it does not set the Set's lifetime, which is the caller's to
// end with Close. On error nothing is left listening or running.
func Start(ctx context.Context, s *stack.Stack, nic tcpip.NICID, cfg Config) (*Set, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start services: %w", err)
	}
	svcs, err := plan(cfg)
	if err != nil {
		return nil, err
	}
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("start services: no listen addresses configured")
	}
	set := &Set{
		dial:     cfg.Dial,
		logf:     cfg.Logf,
		services: svcs,
		done:     make(chan struct{}),
		conns:    make(map[*conn]struct{}),
		changed:  make(chan struct{}),
	}
	if set.dial == nil {
		set.dial = (&net.Dialer{}).DialContext
	}
	if set.logf == nil {
		set.logf = func(string, ...any) {}
	}
	for _, svc := range svcs {
		for _, a := range cfg.Addrs {
			l, err := listen(s, nic, svc, a)
			if err != nil {
				for _, l := range set.listeners {
					l.ep.Close()
				}
				return nil, err
			}
			svc.addrs = append(svc.addrs, l.addr)
			set.listeners = append(set.listeners, l)
		}
	}
	if set.persona, err = startPersona(s, cfg); err != nil {
		for _, l := range set.listeners {
			l.ep.Close()
		}
		return nil, err
	}
	set.wg.Add(len(set.listeners))
	for _, l := range set.listeners {
		go set.acceptLoop(l)
	}
	return set, nil
}

// plan validates cfg's ports and returns the services to start, in the order
// Stats reports them.
func plan(cfg Config) ([]*service, error) {
	builtin := []struct {
		name   string
		port   int
		handle func(*Set, *conn)
	}{
		{ServiceHTTP, cfg.HTTP, (*Set).runSession},
		{ServiceEcho, cfg.Echo, (*Set).runSession},
		{ServiceDiscard, cfg.Discard, (*Set).runSession},
		{ServiceSink, cfg.Sink, (*Set).runSession},
		{ServiceSource, cfg.Source, (*Set).runSession},
	}
	var svcs []*service
	byPort := make(map[uint16]*service)
	add := func(svc *service) error {
		if other, ok := byPort[svc.port]; ok {
			return &PortError{Port: int(svc.port), Services: []string{other.name, svc.name}, Targets: []string{other.target, svc.target}}
		}
		byPort[svc.port] = svc
		svcs = append(svcs, svc)
		return nil
	}
	for _, b := range builtin {
		if b.port == 0 {
			continue
		}
		if b.port < 0 || b.port > 65535 {
			return nil, &PortError{Port: b.port, Services: []string{b.name}, Targets: []string{""}}
		}
		if err := add(&service{name: b.name, port: uint16(b.port), handle: b.handle}); err != nil {
			return nil, err
		}
	}
	for _, f := range cfg.Forwards {
		if err := f.validate(); err != nil {
			return nil, err
		}
		if err := add(&service{name: ServiceForward, port: f.Port, target: f.Target, handle: (*Set).serveForward}); err != nil {
			return nil, err
		}
	}
	return svcs, nil
}

// tcpipError carries a tcpip.Error as a Go error.
type tcpipError struct{ err tcpip.Error }

func (e *tcpipError) Error() string { return e.err.String() }

// forwardBufferSize is the receive and send buffer of a forward's
// connections: gVisor's largest (tcp.MaxBufferSize) instead of its 1 MiB
// default. gVisor charges a super-packet's whole 64 KiB chunk against the
// receive buffer, so 1 MiB advertised only about 390 KB of window, and a
// kernel client sending through a forward waited on that window for a
// quarter of its busy time (tcpi_rwnd_limited; 17 % at 4 MiB). Built-in
// services keep the default: scenarios and their theories are about
// gVisor's own buffer sizes.
const forwardBufferSize = tcp.MaxBufferSize

// listen creates a listening endpoint for svc on addr.
func listen(s *stack.Stack, nic tcpip.NICID, svc *service, addr tcpip.Address) (*listener, error) {
	var proto tcpip.NetworkProtocolNumber
	switch addr.Len() {
	case header.IPv4AddressSize:
		proto = header.IPv4ProtocolNumber
	case header.IPv6AddressSize:
		proto = header.IPv6ProtocolNumber
	default:
		return nil, fmt.Errorf("listen %s: address %q is neither IPv4 nor IPv6", svc.name, addr)
	}
	ap := addrPort(tcpip.FullAddress{Addr: addr, Port: svc.port})
	// Bind alone would not catch a missing IPv4 address: with a NIC given,
	// gVisor (like Linux) only checks the interface for IPv4.
	if s.CheckLocalAddress(0, proto, addr) != nic {
		return nil, fmt.Errorf("listen %s on %s: address is not assigned to NIC %d; add it before starting services", svc.name, ap, nic)
	}
	var wq waiter.Queue
	ep, terr := s.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, fmt.Errorf("listen %s on %s: %w", svc.name, ap, &tcpipError{terr})
	}
	if terr := ep.Bind(tcpip.FullAddress{NIC: nic, Addr: addr, Port: svc.port}); terr != nil {
		ep.Close()
		if _, ok := terr.(*tcpip.ErrBadLocalAddress); ok {
			return nil, fmt.Errorf("listen %s on %s: address is not assigned to NIC %d; add it before starting services", svc.name, ap, nic)
		}
		return nil, fmt.Errorf("listen %s on %s: %w", svc.name, ap, &tcpipError{terr})
	}
	if svc.target != "" {
		// Before Listen: gVisor sizes accepted endpoints' receive buffers,
		// and the window scale of their SYN-ACKs, from the listener's.
		ep.SocketOptions().SetReceiveBufferSize(forwardBufferSize, true /* notify */)
	}
	if terr := ep.Listen(listenBacklog); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("listen %s on %s: %w", svc.name, ap, &tcpipError{terr})
	}
	return &listener{svc: svc, ep: ep, wq: &wq, addr: ap}, nil
}

// acceptLoop accepts connections on l until the Set closes.
func (s *Set) acceptLoop(l *listener) {
	defer s.wg.Done()
	entry, notify := waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr)
	l.wq.EventRegister(&entry)
	defer l.wq.EventUnregister(&entry)
	for {
		var peer tcpip.FullAddress
		ep, wq, terr := l.ep.Accept(&peer)
		switch terr.(type) {
		case nil:
			s.serve(l.svc, ep, wq, peer)
			continue
		case *tcpip.ErrWouldBlock:
			select {
			case <-s.done:
				return
			case <-notify:
				continue
			}
		}
		select {
		case <-s.done:
		default:
			s.logf("%s: accept on %s: %s; no longer listening there", l.svc.name, l.addr, terr)
		}
		return
	}
}

// serve runs svc's handler for a freshly accepted endpoint.
func (s *Set) serve(svc *service, ep tcpip.Endpoint, wq *waiter.Queue, peer tcpip.FullAddress) {
	if svc.target != "" {
		ep.SocketOptions().SetSendBufferSize(forwardBufferSize, true /* notify */)
	}
	c := newConn(svc, ep, wq, peer)
	c.pacer = s.persona.pacer(s.done)
	svc.accepted.Add(1)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.abort()
		return
	}
	s.nextID++
	c.id = s.nextID
	s.conns[c] = struct{}{}
	svc.active.Add(1)
	s.wg.Add(1)
	s.notifyLocked()
	s.mu.Unlock()

	go func() {
		defer s.wg.Done()
		defer s.untrack(c)
		svc.handle(s, c)
	}()
}

// runSession serves a built-in service's connection on its goroutine: it
// steps the connection's session, and when nothing moved, waits for the
// endpoint's next event (data, window space, FIN, reset), the Set's
// closing, or the end of the http service's lingering close.
func (s *Set) runSession(c *conn) {
	sess := newSession(c.svc.name)
	io := &endpointIO{ep: c.ep, svc: c.svc, conn: c}
	// Wait only for the events the session can use now (input while it
	// reads, window space while output is queued): a discard connection
	// is not woken by every ACK, an idle echo by nothing but data.
	var entry waiter.Entry
	var notify chan struct{}
	var mask waiter.EventMask
	defer func() {
		if notify != nil {
			c.wq.EventUnregister(&entry)
		}
	}()
	var linger <-chan time.Time
	for {
		busy := sess.step(io)
		if sess.closed {
			return
		}
		if sess.lingering && linger == nil {
			t := time.NewTimer(lingerTime)
			defer t.Stop()
			linger = t.C
		}
		if m := sess.wants(); m != mask || notify == nil {
			if notify != nil {
				c.wq.EventUnregister(&entry)
			}
			entry, notify = waiter.NewChannelEntry(m)
			c.wq.EventRegister(&entry)
			mask = m
			continue // step again: an event may have come before registering
		}
		if busy {
			continue
		}
		select {
		case <-s.done:
			return
		case <-linger:
			return
		case <-notify:
		}
	}
}

// onClose runs f when the Set closes (at once if it has); the returned
// stop undoes that if it has not run yet.
func (s *Set) onClose(f func()) (stop func()) {
	quit := make(chan struct{})
	go func() {
		select {
		case <-s.done:
			f()
		case <-quit:
		}
	}()
	return func() { close(quit) }
}

// closing reports whether Close has begun.
func (s *Set) closing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// untrack forgets c once its handler is done, and closes it.
func (s *Set) untrack(c *conn) {
	c.close()
	s.mu.Lock()
	delete(s.conns, c)
	c.svc.active.Add(-1)
	s.notifyLocked()
	s.mu.Unlock()
}

// notifyLocked wakes everyone waiting for a change in the connection set.
func (s *Set) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Close stops the listeners, resets every active connection, and returns once
// all of the Set's goroutines have exited. It is safe to call more than once.
func (s *Set) Close() error {
	s.closeOnce.Do(s.shutdown)
	return nil
}

func (s *Set) shutdown() {
	s.persona.stop()
	s.mu.Lock()
	s.closed = true // from now on serve resets new connections at once
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	// Reset before waking the handlers through done, so that a handler
	// that returns on its own cannot close its connection gracefully first.
	for _, c := range conns {
		c.abort()
	}
	close(s.done)
	for _, l := range s.listeners {
		l.ep.Close()
	}
	s.wg.Wait()
}

// ServiceStats are one service's counters since Start.
type ServiceStats struct {
	// Service is the service name: http, echo, discard, sink, source or forward.
	Service string `json:"service"`
	// Port is the TCP port it listens on.
	Port uint16 `json:"port"`
	// Target is where a forward dials; empty for built-in services.
	Target string `json:"target,omitempty"`
	// Addrs are the addresses it listens on.
	Addrs []netip.AddrPort `json:"addrs"`
	// Accepted counts connections accepted since Start.
	Accepted uint64 `json:"accepted"`
	// Active is the number of connections open now.
	Active int64 `json:"active"`
	// BytesIn counts bytes read from clients.
	BytesIn uint64 `json:"bytes_in"`
	// BytesOut counts bytes written to clients.
	BytesOut uint64 `json:"bytes_out"`
	// DialErrors counts forward targets that could not be reached.
	DialErrors uint64 `json:"dial_errors,omitempty"`
}

// Stats returns the counters of every service, built-ins first in the order
// http, echo, discard, sink, source, then forwards in configuration order.
func (s *Set) Stats() []ServiceStats { return serviceStats(s.services) }

// serviceStats snapshots the counters of svcs.
func serviceStats(svcs []*service) []ServiceStats {
	out := make([]ServiceStats, 0, len(svcs))
	for _, svc := range svcs {
		out = append(out, ServiceStats{
			Service:    svc.name,
			Port:       svc.port,
			Target:     svc.target,
			Addrs:      append([]netip.AddrPort(nil), svc.addrs...),
			Accepted:   svc.accepted.Load(),
			Active:     svc.active.Load(),
			BytesIn:    svc.bytesIn.Load(),
			BytesOut:   svc.bytesOut.Load(),
			DialErrors: svc.dialErrors.Load(),
		})
	}
	return out
}

// Conns describes every open connection, oldest first, with gVisor's TCP
// state for each.
func (s *Set) Conns() []ConnInfo {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	sort.Slice(conns, func(i, j int) bool { return conns[i].id < conns[j].id })
	out := make([]ConnInfo, 0, len(conns))
	for _, c := range conns {
		out = append(out, c.info())
	}
	return out
}
