package scenarios

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
	"github.com/unplug-dev/unplug/stack/vlink"
)

// virtualEnv runs a scenario with both ends as gVisor stacks on one virtual
// clock (stack/vlink): the client is a gVisor socket, the peer the same
// netstack and fault layer as on the TUN path. Every blocking call drives
// the clock — fire the next timer, let the stacks settle, poll the peer's
// services — until it can return, so minutes of backoff take milliseconds
// and a run is deterministic for a given seed.
type virtualEnv struct {
	pair    *vlink.Pair
	rec     *Recorder
	svc     *virtualServices
	stepper *vlink.Stepper
}

var _ envCloser = (*virtualEnv)(nil)

// errIdleForever is what a blocking call gets when nothing could ever wake
// it: no timer is pending and no packet is in flight.
var errIdleForever = errors.New("would block forever: no timer is pending and nothing is in flight (set a deadline, keepalive or user timeout)")

// forever is the limit of a blocking call without a deadline.
const forever = time.Duration(math.MaxInt64)

func newVirtualEnv(_ context.Context, cfg envConfig) (envCloser, error) {
	e := &virtualEnv{rec: cfg.Recorder}
	obs := cfg.Observer
	if cfg.StepIn != nil {
		// The stepper needs the pair and the pair needs its observer:
		// bind late.
		obs = fault.Join(obs, fault.ObserverFunc(func(ev *fault.Event) {
			if e.stepper != nil {
				e.stepper.Observer().Observe(ev)
			}
		}))
	}
	pair, err := vlink.NewPair(vlink.PairOptions{Delay: cfg.LinkDelay, Seed: cfg.Seed, Observer: obs})
	if err != nil {
		return nil, fmt.Errorf("build the virtual link: %w", err)
	}
	e.pair = pair
	cfg.Recorder.begin(pair.Clock)
	if e.svc, err = newVirtualServices(pair); err != nil {
		pair.Close()
		return nil, err
	}
	if cfg.StepIn != nil {
		e.stepper = vlink.NewStepper(pair, cfg.StepIn, cfg.StepOut)
		e.stepper.Attach()
	}
	return e, nil
}

// Kernel implements Env: the client is gVisor.
func (e *virtualEnv) Kernel() bool { return false }

// Close implements envCloser.
func (e *virtualEnv) Close() error {
	e.svc.close()
	e.pair.Close()
	return nil
}

// AddFault implements Env.
func (e *virtualEnv) AddFault(spec string) (int, error) { return e.pair.Faults.AddString(spec) }

// RemoveFault implements Env.
func (e *virtualEnv) RemoveFault(id int) error { return e.pair.Faults.Remove(id) }

// Faults implements Env.
func (e *virtualEnv) Faults() *fault.Controller { return e.pair.Faults }

// Now implements Env.
func (e *virtualEnv) Now() time.Duration { return e.rec.Now() }

// Note implements Env (recorded by the wrapping environment).
func (e *virtualEnv) Note(string, string, ...any) {}

// Peer implements Env.
func (e *virtualEnv) Peer() PeerControl { return e.svc }

// Sleep implements Env: virtual time passes, with everything that happens
// in it.
func (e *virtualEnv) Sleep(ctx context.Context, d time.Duration) error {
	err := e.drive(ctx, func() bool { return false }, e.pair.Now()+d)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	return err
}

// SetSysctl implements Env by mapping the kernel's per-namespace TCP knobs
// onto the client stack's equivalents.
func (e *virtualEnv) SetSysctl(name, value string) error {
	n, err := strconv.Atoi(value)
	if err != nil {
		return fmt.Errorf("sysctl %s=%q: not a number", name, value)
	}
	var opt tcpip.SettableTransportProtocolOption
	switch name {
	case "net.ipv4.tcp_retries2":
		o := tcpip.TCPMaxRetriesOption(n)
		opt = &o
	case "net.ipv4.tcp_syn_retries":
		o := tcpip.TCPSynRetriesOption(n)
		opt = &o
	case "net.ipv4.tcp_rto_min_us":
		o := tcpip.TCPMinRTOOption(time.Duration(n) * time.Microsecond)
		opt = &o
	default:
		return fmt.Errorf("sysctl %s has no gVisor equivalent in --clock virtual: %w", name, errors.ErrUnsupported)
	}
	if terr := e.pair.Client.SetTransportProtocolOption(tcp.ProtocolNumber, opt); terr != nil {
		return fmt.Errorf("set %s=%s on the virtual client: %s", name, value, terr)
	}
	return nil
}

// Dial implements Env.
func (e *virtualEnv) Dial(ctx context.Context, port uint16, opts SockOpts) (Conn, error) {
	before := e.svc.Accepted(port)
	c, err := e.pair.Dial(vlink.PeerAddr4.String(), port)
	if err != nil {
		return nil, virtualErr("connect", err)
	}
	if err := applyVirtualOpts(c, opts); err != nil {
		c.Close()
		return nil, err
	}
	limit := forever
	if opts.ConnectTimeout > 0 {
		limit = e.pair.Now() + opts.ConnectTimeout
	}
	err = e.drive(ctx, func() bool { return c.Established() || c.Err() != nil }, limit)
	switch {
	case c.Err() != nil:
		c.Close()
		return nil, virtualErr("connect", c.Err())
	case err != nil:
		c.Close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	if opts.KeepIdle > 0 {
		// gVisor arms the keepalive timer when the option is set on a
		// connected endpoint, not when a connection set up earlier
		// completes: set it again now.
		if err := c.SetKeepalive(opts.KeepIdle, opts.KeepIntvl, opts.KeepCnt); err != nil {
			c.Close()
			return nil, virtualErr("setsockopt SO_KEEPALIVE", err)
		}
	}
	if !opts.NoWaitAccept {
		if err := e.drive(ctx, func() bool { return e.svc.Accepted(port) > before }, forever); err != nil {
			c.Close()
			return nil, fmt.Errorf("the peer never accepted the connection: %w", err)
		}
	}
	return &virtualConn{env: e, ctx: ctx, c: c}, nil
}

func applyVirtualOpts(c *vlink.Conn, o SockOpts) error {
	if o.UserTimeout > 0 {
		if err := c.SetUserTimeout(o.UserTimeout); err != nil {
			return virtualErr("setsockopt TCP_USER_TIMEOUT", err)
		}
	}
	if o.KeepIdle > 0 {
		if err := c.SetKeepalive(o.KeepIdle, o.KeepIntvl, o.KeepCnt); err != nil {
			return virtualErr("setsockopt SO_KEEPALIVE", err)
		}
	}
	if o.SndBuf > 0 {
		c.SetSendBuffer(o.SndBuf)
	}
	if o.RcvBuf > 0 {
		c.SetReceiveBuffer(o.RcvBuf)
	}
	return nil
}

// drive runs the virtual world until done() holds: it polls the peer's
// services, lets both stacks settle, and fires the next timer, one at a
// time. It returns os.ErrDeadlineExceeded at limit (virtual time then
// stands at limit) and errIdleForever when no limit is set and nothing is
// left that could make done() true.
func (e *virtualEnv) drive(ctx context.Context, done func() bool, limit time.Duration) error {
	for {
		// Settle delivers what is due now (zero-delay packets included);
		// what is still in flight afterwards waits on a clock timer.
		e.pair.Settle()
		for e.svc.poll() {
			e.pair.Settle()
		}
		if done() {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if next, ok := e.pair.Clock.Next(); ok && next <= limit {
			e.pair.Step()
			continue
		}
		if limit == forever {
			return errIdleForever
		}
		e.pair.AdvanceTo(limit)
		for e.svc.poll() {
			e.pair.Settle()
		}
		if done() {
			return nil
		}
		return os.ErrDeadlineExceeded
	}
}

// virtualConn gives a vlink.Conn the blocking semantics of a kernel socket.
type virtualConn struct {
	env      *virtualEnv
	ctx      context.Context
	c        *vlink.Conn
	deadline time.Duration // 0 = none
	pending  error         // error to report after a short write
}

func (vc *virtualConn) limit() time.Duration {
	if vc.deadline > 0 {
		return vc.deadline
	}
	return forever
}

// Write blocks until all of p is accepted or the connection fails; after a
// partial write it returns the short count and reports the error on the
// next call, as send(2) does. A deadline that passes returns the short
// count, or os.ErrDeadlineExceeded when nothing was written.
func (vc *virtualConn) Write(p []byte) (int, error) {
	if err := vc.pending; err != nil {
		vc.pending = nil
		return 0, err
	}
	written := 0
	var werr error
	// try writes what fits and reports whether that made progress or
	// failed for good: the condition the driver runs the world until.
	try := func() bool {
		n, err := vc.c.Write(p[written:])
		written += n
		werr = err
		return n > 0 || !errors.Is(err, vlink.ErrWouldBlock)
	}
	for written < len(p) {
		if !try() {
			if err := vc.env.drive(vc.ctx, try, vc.limit()); err != nil {
				if written > 0 {
					return written, nil
				}
				return 0, fmt.Errorf("send: %w", err)
			}
		}
		if werr != nil && !errors.Is(werr, vlink.ErrWouldBlock) {
			err := virtualErr("send", werr)
			if written > 0 {
				vc.pending = err
				return written, nil
			}
			return 0, err
		}
	}
	return written, nil
}

// Read blocks until data, end of stream or an error.
func (vc *virtualConn) Read(p []byte) (int, error) {
	var n int
	var rerr error
	try := func() bool {
		n, rerr = vc.c.Read(p)
		return !errors.Is(rerr, vlink.ErrWouldBlock)
	}
	if try() {
		return n, wrapRead(rerr)
	}
	if err := vc.env.drive(vc.ctx, try, vc.limit()); err != nil {
		return 0, fmt.Errorf("recv: %w", err)
	}
	return n, wrapRead(rerr)
}

func wrapRead(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	return virtualErr("recv", err)
}

// SetDeadline implements Conn: t is on the scenario's clock.
func (vc *virtualConn) SetDeadline(t time.Duration) error {
	vc.deadline = t
	return nil
}

// Close implements Conn.
func (vc *virtualConn) Close() error {
	vc.c.Close()
	vc.env.pair.Settle()
	return nil
}

// Info implements Conn.
func (vc *virtualConn) Info() ConnInfo {
	ti := vc.c.Info()
	st := vc.c.Stats()
	return ConnInfo{
		State:       vc.c.State(),
		RTO:         ti.RTO,
		RTT:         ti.RTT,
		Retransmits: int(st.SendErrors.Retransmits.Value()),
	}
}

// virtualErr names the operation; ErrnoName reads the errno vlink carries.
func virtualErr(op string, err error) error { return fmt.Errorf("%s: %w", op, err) }

// virtualServices are the peer's services for virtual time: the same
// behaviour as stack/services, but as state machines the driver polls
// between clock steps instead of goroutines that would run on their own.
type virtualServices struct {
	pair      *vlink.Pair
	listeners []*vlink.Listener
	accepted  map[uint16]int
	received  map[uint16]int64 // bytes read from clients, per port
	conns     []*virtualPeerConn
	buf       [64 << 10]byte
}

type virtualPeerConn struct {
	port      uint16
	c         *vlink.Conn
	in        []byte // http: request bytes so far
	out       []byte // queued response bytes
	sent      int64  // source: bytes written so far
	responded bool   // http: the response is queued
	eof       bool   // the client half-closed
	closed    bool
}

func newVirtualServices(pair *vlink.Pair) (*virtualServices, error) {
	s := &virtualServices{pair: pair, accepted: map[uint16]int{}, received: map[uint16]int64{}}
	cfg := peerServices()
	for _, port := range []int{cfg.HTTP, cfg.Echo, cfg.Discard, cfg.Sink, cfg.Source} {
		l, err := pair.Listen(uint16(port))
		if err != nil {
			s.close()
			return nil, fmt.Errorf("listen on virtual port %d: %w", port, err)
		}
		s.listeners = append(s.listeners, l)
	}
	return s, nil
}

func (s *virtualServices) close() {
	for _, c := range s.conns {
		c.c.Close()
	}
	for _, l := range s.listeners {
		l.Close()
	}
}

// poll accepts and serves without blocking; it reports whether it did
// anything that may have produced packets.
func (s *virtualServices) poll() bool {
	busy := false
	for _, l := range s.listeners {
		for {
			c, err := l.Accept()
			if err != nil {
				break
			}
			s.accepted[l.Port()]++
			s.conns = append(s.conns, &virtualPeerConn{port: l.Port(), c: c})
			busy = true
		}
	}
	for _, pc := range s.conns {
		if !pc.closed && pc.serve(s.buf[:], s.received) {
			busy = true
		}
	}
	return busy
}

// serve runs one connection's service as far as it can go now.
func (pc *virtualPeerConn) serve(buf []byte, received map[uint16]int64) bool {
	busy := false
	cfg := peerServices()
	switch int(pc.port) {
	case cfg.Sink:
		return false // accepts, never reads
	case cfg.Source:
		for {
			chunk := services.Pattern(pc.sent, 16<<10)
			n, err := pc.c.Write(chunk)
			pc.sent += int64(n)
			if n > 0 {
				busy = true
			}
			if err != nil || n < len(chunk) {
				if err != nil && !errors.Is(err, vlink.ErrWouldBlock) {
					pc.closed = true
				}
				return busy
			}
		}
	}
	for !pc.eof {
		n, err := pc.c.Read(buf)
		received[pc.port] += int64(n)
		if n > 0 {
			busy = true
			switch {
			case int(pc.port) == cfg.Echo:
				pc.out = append(pc.out, buf[:n]...)
			case int(pc.port) == cfg.HTTP && !pc.responded:
				pc.in = append(pc.in, buf[:n]...)
				if resp, ok := services.HTTPResponse(pc.in); ok {
					pc.out, pc.in, pc.responded = resp, nil, true
				}
			}
		}
		if errors.Is(err, io.EOF) {
			pc.eof, busy = true, true
		} else if err != nil {
			if !errors.Is(err, vlink.ErrWouldBlock) {
				pc.closed = true
				return true
			}
			break
		}
	}
	for len(pc.out) > 0 {
		n, err := pc.c.Write(pc.out)
		pc.out = pc.out[n:]
		if n > 0 {
			busy = true
		}
		if err != nil {
			break
		}
	}
	if len(pc.out) > 0 {
		return busy
	}
	switch {
	case int(pc.port) == cfg.HTTP && pc.responded:
		// The response is out: close like the http service does.
		pc.c.Close()
		pc.closed, busy = true, true
	case pc.eof:
		pc.c.CloseWrite()
		pc.closed, busy = true, true
	}
	return busy
}

// Forget implements PeerControl like the real peer: the RSTs of the aborted
// connections are eaten by a temporary drop rule.
func (s *virtualServices) Forget() (int, error) {
	id := s.pair.Faults.Add(fault.Spec{Action: fault.ActDrop, Dir: fault.Out})
	n := 0
	for _, pc := range s.conns {
		if !pc.closed {
			pc.c.Abort()
			pc.closed = true
			n++
		}
	}
	s.pair.Settle()
	return n, s.pair.Faults.Remove(id)
}

// Accepted implements PeerControl.
func (s *virtualServices) Accepted(port uint16) int { return s.accepted[port] }

// Received implements PeerControl.
func (s *virtualServices) Received(port uint16) int64 { return s.received[port] }

// Conns implements PeerControl.
func (s *virtualServices) Conns(port uint16) []stack.ConnStatus {
	return connsOnPort(s.pair.Peer, port)
}

// SetUserTimeout implements PeerControl.
func (s *virtualServices) SetUserTimeout(port uint16, d time.Duration) (int, error) {
	n := 0
	for _, pc := range s.conns {
		if pc.port != port || pc.closed {
			continue
		}
		if err := pc.c.SetUserTimeout(d); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
