package services

import (
	"errors"
	"fmt"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// ErrNeedsRealTime is wrapped by NewPoller for a Config with something that
// can only run on goroutines in real time: forwards (they dial real hosts)
// and personas (their timers and read pacing run on the wall clock).
var ErrNeedsRealTime = errors.New("needs real time")

// Poller runs the built-in services (http, echo, discard, sink, source) on
// a stack without goroutines of its own: every call to Poll accepts what is
// waiting and steps each connection's session (the state machine Set's
// goroutines step too) as far as it can go without blocking. It is how the virtual-time driver (internal/vlink, the scenarios'
// virtual environment) serves: between two clock steps it polls until
// nothing moves, so the services react at the virtual instant their input
// arrived and never race the clock. The services are Start's: the same
// ports and listeners (Config, plan), sessions and counters (Stats). One
// difference: the http service's lingering close has no time bound in
// virtual time (lingerBytes still bounds it).
//
// A Poller is driven from one goroutine, like the stacks under a virtual
// clock; it is not safe for concurrent use.
type Poller struct {
	services  []*service
	listeners []*listener
	conns     []*polledConn
}

// polledConn is one connection under a Poller.
type polledConn struct {
	svc    *service
	ep     tcpip.Endpoint
	io     endpointIO
	s      *session
	closed bool
}

// NewPoller listens on every enabled built-in port of cfg on each of
// cfg.Addrs (already assigned to nic). Forwards and personas are refused
// with an error wrapping ErrNeedsRealTime. Nothing is served until Poll.
func NewPoller(s *stack.Stack, nic tcpip.NICID, cfg Config) (*Poller, error) {
	switch {
	case len(cfg.Forwards) > 0:
		return nil, fmt.Errorf("poll services: forwards dial real hosts: %w", ErrNeedsRealTime)
	case cfg.Persona.Name != "":
		return nil, fmt.Errorf("poll services: persona %s: %w", cfg.Persona.Name, ErrNeedsRealTime)
	case len(cfg.Addrs) == 0:
		return nil, errors.New("poll services: no listen addresses configured")
	}
	svcs, err := plan(cfg)
	if err != nil {
		return nil, err
	}
	p := &Poller{services: svcs}
	for _, svc := range svcs {
		for _, a := range cfg.Addrs {
			l, err := listen(s, nic, svc, a)
			if err != nil {
				p.Close()
				return nil, err
			}
			svc.addrs = append(svc.addrs, l.addr)
			p.listeners = append(p.listeners, l)
		}
	}
	return p, nil
}

// Poll accepts every waiting connection and serves each as far as it can go
// now. It reports whether it did anything that may have sent packets; a
// driver polls again (after letting the stacks settle) until it reports
// false.
func (p *Poller) Poll() bool {
	busy := false
	for _, l := range p.listeners {
		for {
			ep, _, terr := l.ep.Accept(nil)
			if terr != nil {
				break
			}
			l.svc.accepted.Add(1)
			l.svc.active.Add(1)
			p.conns = append(p.conns, &polledConn{svc: l.svc, ep: ep, io: endpointIO{ep: ep, svc: l.svc}, s: newSession(l.svc.name)})
			busy = true
		}
	}
	for _, c := range p.conns {
		if c.closed {
			continue
		}
		if c.s.step(&c.io) {
			busy = true
		}
		if c.s.closed {
			c.finish()
		}
	}
	return busy
}

// finish closes the connection (FIN, or RST with unread input, as close(2)).
func (c *polledConn) finish() {
	c.ep.Close()
	c.closed = true
	c.svc.active.Add(-1)
}

// Accepted returns how many connections the services on port accepted.
func (p *Poller) Accepted(port uint16) int {
	n := 0
	for _, svc := range p.services {
		if svc.port == port {
			n += int(svc.accepted.Load())
		}
	}
	return n
}

// Received returns how many bytes the services on port read from clients.
func (p *Poller) Received(port uint16) int64 {
	var n int64
	for _, svc := range p.services {
		if svc.port == port {
			n += int64(svc.bytesIn.Load())
		}
	}
	return n
}

// Abort resets every open connection (RST, like close(2) with SO_LINGER
// 0) and forgets it; with the RSTs dropped by a fault rule the clients are
// left half-open. It returns how many connections it aborted.
func (p *Poller) Abort() int {
	n := 0
	for _, c := range p.conns {
		if !c.closed {
			c.ep.Abort()
			c.closed = true
			c.svc.active.Add(-1)
			n++
		}
	}
	return n
}

// SetUserTimeout sets TCP_USER_TIMEOUT on the open connections on port and
// returns how many it changed.
func (p *Poller) SetUserTimeout(port uint16, d time.Duration) (int, error) {
	n := 0
	opt := tcpip.TCPUserTimeoutOption(d)
	for _, c := range p.conns {
		if c.svc.port != port || c.closed {
			continue
		}
		if terr := c.ep.SetSockOpt(&opt); terr != nil {
			return n, fmt.Errorf("setsockopt TCP_USER_TIMEOUT: %s", terr)
		}
		n++
	}
	return n, nil
}

// Stats returns the counters of every service, as Set.Stats does.
func (p *Poller) Stats() []ServiceStats { return serviceStats(p.services) }

// Close closes every connection and listener.
func (p *Poller) Close() {
	for _, c := range p.conns {
		if !c.closed {
			c.finish()
		}
	}
	for _, l := range p.listeners {
		l.ep.Close()
	}
}
