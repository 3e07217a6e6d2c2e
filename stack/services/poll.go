package services

import (
	"bytes"
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
// waiting and moves each connection's service as far as it can go without
// blocking. It is how the virtual-time driver (stack/vlink, the scenarios'
// virtual environment) serves: between two clock steps it polls until
// nothing moves, so the services react at the virtual instant their input
// arrived and never race the clock. The services answer as Start's do: the
// same ports and listeners (Config, plan), the same HTTP responses
// (HTTPResponse) and source pattern (Pattern), the same counters (Stats).
//
// A Poller is driven from one goroutine, like the stacks under a virtual
// clock; it is not safe for concurrent use.
type Poller struct {
	services  []*service
	listeners []*listener
	conns     []*polledConn
	buf       [64 << 10]byte
}

// polledConn is one connection's service state between polls.
type polledConn struct {
	svc       *service
	ep        tcpip.Endpoint
	in        []byte // http: request bytes so far
	out       []byte // queued response bytes
	sent      int64  // source: bytes written so far
	responded bool   // http: the response is queued
	eof       bool   // the client half-closed
	closed    bool
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
			p.conns = append(p.conns, &polledConn{svc: l.svc, ep: ep})
			busy = true
		}
	}
	for _, c := range p.conns {
		if !c.closed && c.serve(p.buf[:]) {
			busy = true
		}
	}
	return busy
}

// read is a non-blocking read: (0, nil) means nothing yet, eof the client's
// FIN, err a connection that is gone.
func (c *polledConn) read(buf []byte) (n int, eof bool, err tcpip.Error) {
	w := tcpip.SliceWriter(buf)
	res, terr := c.ep.Read(&w, tcpip.ReadOptions{})
	switch terr.(type) {
	case nil:
		if res.Count > 0 {
			c.ep.ModerateRecvBuf(res.Count)
		}
		c.svc.bytesIn.Add(uint64(res.Count))
		return res.Count, false, nil
	case *tcpip.ErrWouldBlock:
		return 0, false, nil
	case *tcpip.ErrClosedForReceive:
		return 0, true, nil
	}
	return 0, false, terr
}

// write is a non-blocking write of as much of b as fits.
func (c *polledConn) write(b []byte) (int, tcpip.Error) {
	var r bytes.Reader
	r.Reset(b)
	n, terr := c.ep.Write(&r, tcpip.WriteOptions{})
	c.svc.bytesOut.Add(uint64(n))
	if _, ok := terr.(*tcpip.ErrWouldBlock); ok {
		terr = nil
	}
	return int(n), terr
}

// finish closes the connection (FIN, or RST with unread input, as close(2)).
func (c *polledConn) finish() {
	c.ep.Close()
	c.closed = true
	c.svc.active.Add(-1)
}

// serve runs one connection's service as far as it can go now and reports
// whether it did anything.
func (c *polledConn) serve(buf []byte) bool {
	busy := false
	switch c.svc.name {
	case ServiceSink:
		return false // accepts, never reads
	case ServiceSource:
		for {
			chunk := Pattern(c.sent, 16<<10)
			n, err := c.write(chunk)
			c.sent += int64(n)
			if n > 0 {
				busy = true
			}
			if err != nil {
				c.finish()
				return true
			}
			if n < len(chunk) {
				return busy
			}
		}
	}
	for !c.eof {
		n, eof, err := c.read(buf)
		if err != nil {
			c.finish()
			return true
		}
		if n > 0 {
			busy = true
			switch {
			case c.svc.name == ServiceEcho:
				c.out = append(c.out, buf[:n]...)
			case c.svc.name == ServiceHTTP && !c.responded:
				c.in = append(c.in, buf[:n]...)
				if resp, ok := HTTPResponse(c.in); ok {
					c.out, c.in, c.responded = resp, nil, true
				}
			}
		}
		if eof {
			c.eof, busy = true, true
			if c.svc.name == ServiceHTTP && !c.responded && len(bytes.TrimSpace(c.in)) > 0 {
				// A partial head ended by the client's FIN is answered,
				// as readHead does.
				c.out, c.in, c.responded = respondTo(c.in), nil, true
			}
		}
		if n == 0 && !eof {
			break
		}
	}
	for len(c.out) > 0 {
		n, err := c.write(c.out)
		c.out = c.out[n:]
		if n > 0 {
			busy = true
		}
		if err != nil {
			c.finish()
			return true
		}
		if n == 0 {
			break
		}
	}
	if len(c.out) > 0 {
		return busy
	}
	switch {
	case c.svc.name == ServiceHTTP && c.responded:
		// The response is out: close, as the http service does.
		c.finish()
		busy = true
	case c.eof:
		c.ep.Shutdown(tcpip.ShutdownWrite)
		c.finish()
		busy = true
	}
	return busy
}

// respondTo answers a request head that ended without a blank line.
func respondTo(head []byte) []byte {
	var b bytes.Buffer
	respond(&b, head, nil)
	return b.Bytes()
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
