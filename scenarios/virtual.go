package scenarios

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/internal/vlink"
	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
)

// virtualEnv runs a scenario with both ends as gVisor stacks on one virtual
// clock (internal/vlink): the client is a gVisor socket, the peer the same
// netstack and fault layer as on the TUN path. Every blocking call drives
// the clock — fire the next timer, let the stacks settle, poll the peer's
// services — until it can return, so minutes of backoff take milliseconds
// and a run is deterministic for a given seed.
type virtualEnv struct {
	pair    *vlink.Pair
	rec     *recorder
	svc     *virtualServices
	stepper *vlink.Stepper
}

var _ envCloser = (*virtualEnv)(nil)

// forever is the limit of a blocking call without a deadline.
const forever = vlink.Forever

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
		return fmt.Errorf("sysctl %s has no gVisor equivalent on the virtual clock: %w", name, errors.ErrUnsupported)
	}
	if terr := e.pair.Client.SetTransportProtocolOption(tcp.ProtocolNumber, opt); terr != nil {
		return fmt.Errorf("set %s=%s on the virtual client: %s", name, value, terr)
	}
	return nil
}

// Dial implements Env.
func (e *virtualEnv) Dial(ctx context.Context, port uint16, opts SockOpts) (envConn, error) {
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
	vc := &virtualConn{env: e, c: c}
	// As a kernel socket's (kernelConn), the Dial context's end ends the
	// blocking calls in progress and to come; Close releases the hook.
	vc.stop = context.AfterFunc(ctx, func() {
		err := context.Cause(ctx)
		vc.cancelled.Store(&err)
	})
	return vc, nil
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

// drive runs the virtual world until done() holds: vlink.Driver with the
// peer's services. It returns os.ErrDeadlineExceeded at limit (virtual time
// then stands at limit) and vlink.ErrIdle when no limit is set and nothing
// is left that could make done() true.
func (e *virtualEnv) drive(ctx context.Context, done func() bool, limit time.Duration) error {
	d := vlink.Driver{Pair: e.pair, Poll: e.svc.Poll}
	return d.Drive(ctx, done, limit)
}

// virtualConn gives a vlink.Conn the blocking semantics of a kernel socket.
type virtualConn struct {
	env       *virtualEnv
	c         *vlink.Conn
	deadline  time.Duration         // 0 = none
	pending   error                 // error to report after a short write
	cancelled atomic.Pointer[error] // the Dial context's end, once it ended
	stop      func() bool           // releases the hook that sets cancelled
}

// drive runs the virtual world until done() holds, the deadline passes
// (os.ErrDeadlineExceeded) or the Dial context has ended (its error).
func (vc *virtualConn) drive(done func() bool) error {
	d := vlink.Driver{Pair: vc.env.pair, Poll: vc.env.svc.Poll}
	for {
		if ok, err := d.Once(done, vc.limit()); ok || err != nil {
			return err
		}
		if err := vc.cancelled.Load(); err != nil {
			return *err
		}
	}
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
			if err := vc.drive(try); err != nil {
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
	if err := vc.drive(try); err != nil {
		return 0, fmt.Errorf("recv: %w", err)
	}
	return n, wrapRead(rerr)
}

// readUntil implements untilReader: Read that also returns (0, true, nil)
// at the first settled instant at which stop holds, so a scenario waiting
// for something on the peer wakes at that very instant instead of at its
// next poll.
func (vc *virtualConn) readUntil(p []byte, stop func() bool) (int, bool, error) {
	var n int
	var rerr error
	stopped := false
	try := func() bool {
		n, rerr = vc.c.Read(p)
		if !errors.Is(rerr, vlink.ErrWouldBlock) {
			return true
		}
		stopped = stop()
		return stopped
	}
	if try() {
		if stopped {
			return 0, true, nil
		}
		return n, false, wrapRead(rerr)
	}
	if err := vc.drive(try); err != nil {
		return 0, false, fmt.Errorf("recv: %w", err)
	}
	if stopped {
		return 0, true, nil
	}
	return n, false, wrapRead(rerr)
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
	vc.stop()
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

// virtualServices are the peer's services for virtual time: the services
// package's Poller, which the driver polls between clock steps instead of
// goroutines that would run on their own, plus PeerControl.
type virtualServices struct {
	pair *vlink.Pair
	*services.Poller
}

func newVirtualServices(pair *vlink.Pair) (*virtualServices, error) {
	cfg := peerServices()
	cfg.Addrs = []tcpip.Address{services.DefaultAddrV4, services.DefaultAddrV6}
	p, err := services.NewPoller(pair.Peer, vlink.NIC, cfg)
	if err != nil {
		return nil, fmt.Errorf("the virtual peer's services: %w", err)
	}
	return &virtualServices{pair: pair, Poller: p}, nil
}

func (s *virtualServices) close() { s.Poller.Close() }

// Forget implements PeerControl like the real peer: the RSTs of the aborted
// connections are eaten by a temporary drop rule.
func (s *virtualServices) Forget() (int, error) {
	id := s.pair.Faults.Add(fault.Spec{Action: fault.ActDrop, Dir: packet.Out})
	n := s.Abort()
	s.pair.Settle()
	return n, s.pair.Faults.Remove(id)
}

// Conns implements PeerControl.
func (s *virtualServices) Conns(port uint16) []stack.ConnStatus {
	return connsOnPort(s.pair.Peer, port)
}
