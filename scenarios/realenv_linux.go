package scenarios

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/tun"
)

// acceptWait bounds how long Dial waits for the peer to accept a
// connection the kernel already reports as established.
const acceptWait = 30 * time.Second

// realEnv is the real-time environment: a private network namespace (made
// by tun.NewNamespace) whose only interface besides lo is the TUN; the
// peer's netstack in this process on the TUN's other end; and client
// sockets of the host kernel created inside the namespace.
type realEnv struct {
	peerSide
	ns *tun.Namespace

	mu        sync.Mutex
	conns     []*kernelConn
	closeOnce sync.Once
	closeErr  error
}

var _ envCloser = (*realEnv)(nil)

// newRealEnv builds the namespace, the TUN and the peer. IPv6 is off on the
// TUN so that the kernel's own chatter (router solicitations, MLD reports)
// never shows up in a report: every packet on the link is the scenario's.
func newRealEnv(ctx context.Context, cfg envConfig) (envCloser, error) {
	tcfg := tun.DefaultConfig()
	tcfg.HostPrefix6 = netip.Prefix{}
	ns, err := tun.NewNamespace(ctx, tun.NamespaceConfig{
		TUN:     tcfg,
		Sysctls: map[string]string{"net.ipv6.conf.default.disable_ipv6": "1"},
	})
	if err != nil {
		return nil, fmt.Errorf("create the private network namespace: %w", err)
	}
	clock := tcpip.NewStdClock()
	cfg.Recorder.begin(clock)
	peer, err := stack.New(ctx, stack.Options{
		Device:   ns.Device(),
		Clock:    clock,
		Seed:     cfg.Seed,
		NoIPv6:   true,
		Observer: cfg.Observer,
		Services: peerServices(),
	})
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("start the peer: %w", err)
	}
	return &realEnv{peerSide: peerSide{peer: peer, rec: cfg.Recorder}, ns: ns}, nil
}

// Kernel implements Env: the client is the host kernel's TCP.
func (e *realEnv) Kernel() bool { return true }

// SetSysctl implements Env; the sysctl is written inside the private
// namespace only.
func (e *realEnv) SetSysctl(name, value string) error { return e.ns.SetSysctl(name, value) }

// Sleep implements Env.
func (e *realEnv) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Dial implements Env: a kernel socket created in the namespace, options
// set before connect(2), a blocking connect to the peer, then (unless
// opts.NoWaitAccept) a wait until the peer's service has accepted.
func (e *realEnv) Dial(ctx context.Context, port uint16, opts SockOpts) (envConn, error) {
	before := e.Peer().Accepted(port)
	f, err := e.socket()
	if err != nil {
		return nil, err
	}
	c, err := newKernelConn(f, e.Now)
	if err != nil {
		f.Close()
		return nil, err
	}
	c.stop = context.AfterFunc(ctx, c.shutdown)
	if err := c.setOptions(opts); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.connect(netip.AddrPortFrom(stack.DefaultAddr4, port), opts.ConnectTimeout); err != nil {
		c.Close()
		return nil, err
	}
	e.mu.Lock()
	e.conns = append(e.conns, c)
	e.mu.Unlock()
	if !opts.NoWaitAccept {
		if err := e.waitAccepted(ctx, port, before); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// socket returns a TCP socket created inside the namespace, non-blocking
// and registered with Go's poller. kernelConn gives it the semantics of a
// plain blocking socket without ever blocking a thread in the kernel: a
// goroutine parked in connect(2) or recv(2) keeps its P, and when it was the
// thread polling the network nothing reads the TUN until sysmon notices
// (up to 10 ms), which inflated the kernel's handshake RTT to 11–13 ms and
// moved every RTO after it.
func (e *realEnv) socket() (*os.File, error) {
	f, err := e.ns.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return nil, fmt.Errorf("create a client socket in the namespace: %w", err)
	}
	return f, nil
}

// waitAccepted waits until the peer accepted more connections on port than
// before. The kernel's connect returns when it sent the handshake's final
// ACK; the peer may not have it yet, and an outage started now could drop
// it (FACTS.md).
func (e *realEnv) waitAccepted(ctx context.Context, port uint16, before int) error {
	deadline := time.Now().Add(acceptWait)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for e.Peer().Accepted(port) <= before {
		if time.Now().After(deadline) {
			return fmt.Errorf("the peer did not accept the connection on port %d within %s", port, acceptWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// Close implements envCloser: client sockets first, then the peer (which
// closes the TUN), then the namespace's agent.
func (e *realEnv) Close() error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		conns := e.conns
		e.conns = nil
		e.mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
		e.closeErr = e.peer.Close()
		// An agent that died mid-run took the namespace's guarantees
		// with it (no new sockets, sysctls or cleanup): the run failed.
		select {
		case <-e.ns.Done():
			e.closeErr = fmt.Errorf("the namespace agent (pid %d) died during the run: %w", e.ns.PID(), e.ns.Err())
		default:
		}
		if err := e.ns.Close(); err != nil && e.closeErr == nil {
			e.closeErr = err
		}
	})
	return e.closeErr
}

// kernelConn is a kernel TCP socket with the semantics of a blocking one
// (the seed's Python): one Write is one send(2) that waits until all of p
// is queued and returns a short count when an error or the deadline cuts
// it off; one Read is one recv(2). The waiting happens in Go's poller, not
// in the kernel (see realEnv.socket). Cancelling the Dial context shuts the
// socket down, which wakes a waiting call.
type kernelConn struct {
	f   *os.File
	rc  syscall.RawConn
	fd  int // f's descriptor, for socket options; valid until Close
	now func() time.Duration

	mu       sync.Mutex
	closed   bool
	stop     func() bool
	deadline time.Duration // scenario time; 0 = none
}

var _ envConn = (*kernelConn)(nil)

// newKernelConn takes ownership of f, a non-blocking socket.
func newKernelConn(f *os.File, now func() time.Duration) (*kernelConn, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("client socket: %w", err)
	}
	fd := -1
	if err := rc.Control(func(s uintptr) { fd = int(s) }); err != nil {
		return nil, fmt.Errorf("client socket: %w", err)
	}
	return &kernelConn{f: f, rc: rc, fd: fd, now: now}, nil
}

// shutdown wakes waiting calls (context cancelled).
func (c *kernelConn) shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		unix.Shutdown(c.fd, unix.SHUT_RDWR)
	}
}

// setOptions applies the socket options before connect.
func (c *kernelConn) setOptions(o SockOpts) error {
	set := func(name string, level, opt, v int) error {
		if err := unix.SetsockoptInt(c.fd, level, opt, v); err != nil {
			return fmt.Errorf("set %s=%d on the client socket: %w", name, v, err)
		}
		return nil
	}
	secs := func(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }
	if o.UserTimeout > 0 {
		if err := set("TCP_USER_TIMEOUT", unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(o.UserTimeout.Milliseconds())); err != nil {
			return err
		}
	}
	if o.KeepIdle > 0 {
		if err := set("SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1); err != nil {
			return err
		}
		if err := set("TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, secs(o.KeepIdle)); err != nil {
			return err
		}
		if o.KeepIntvl > 0 {
			if err := set("TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, secs(o.KeepIntvl)); err != nil {
				return err
			}
		}
		if o.KeepCnt > 0 {
			if err := set("TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, o.KeepCnt); err != nil {
				return err
			}
		}
	}
	if o.SndBuf > 0 {
		if err := set("SO_SNDBUF", unix.SOL_SOCKET, unix.SO_SNDBUF, o.SndBuf); err != nil {
			return err
		}
	}
	if o.RcvBuf > 0 {
		if err := set("SO_RCVBUF", unix.SOL_SOCKET, unix.SO_RCVBUF, o.RcvBuf); err != nil {
			return err
		}
	}
	return nil
}

// connect runs connect(2) and waits for the handshake's result, as a
// blocking connect does; timeout, if set, bounds the wait (the handshake
// goes on in the kernel, as after SO_SNDTIMEO) and yields
// os.ErrDeadlineExceeded.
func (c *kernelConn) connect(to netip.AddrPort, timeout time.Duration) error {
	sa := &unix.SockaddrInet4{Port: int(to.Port()), Addr: to.Addr().As4()}
	if timeout > 0 {
		c.f.SetWriteDeadline(time.Now().Add(timeout))
		defer c.f.SetWriteDeadline(time.Time{})
	}
	started := false
	var cerr error
	err := c.rc.Write(func(fd uintptr) bool {
		if !started {
			started = true
			cerr = unix.Connect(int(fd), sa)
			return cerr != unix.EINPROGRESS && cerr != unix.EINTR
		}
		soerr, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			cerr = err
		case soerr != 0:
			cerr = unix.Errno(soerr)
		default:
			if _, err := unix.Getpeername(int(fd)); err == unix.ENOTCONN {
				return false // not yet: a wake-up without a result
			}
			cerr = nil
		}
		return true
	})
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("connect to %s: %w", to, os.ErrDeadlineExceeded)
	case err != nil:
		return fmt.Errorf("connect to %s: %w", to, err)
	case cerr != nil:
		return fmt.Errorf("connect to %s: %w", to, os.NewSyscallError("connect", cerr))
	}
	return nil
}

// arm sets the poller deadline for f from the scenario deadline before a
// call; it returns false when the deadline has already passed.
func (c *kernelConn) arm(set func(time.Time) error) bool {
	c.mu.Lock()
	dl := c.deadline
	c.mu.Unlock()
	if dl == 0 {
		set(time.Time{})
		return true
	}
	left := dl - c.now()
	if left <= 0 {
		return false
	}
	set(time.Now().Add(left))
	return true
}

// Write implements Conn like one blocking send(2) with MSG_NOSIGNAL (EPIPE,
// not SIGPIPE): it queues all of p, waiting for buffer space as often as
// needed. When an error becomes pending after part of p was queued, it
// returns the short count and leaves the error for the next call, exactly
// as the kernel's blocking send does (tcp_sendmsg returns what it copied
// and keeps sk_err); a deadline does the same.
func (c *kernelConn) Write(p []byte) (int, error) {
	if !c.arm(c.f.SetWriteDeadline) {
		return 0, fmt.Errorf("send: %w", os.ErrDeadlineExceeded)
	}
	sent := 0
	var serr error
	err := c.rc.Write(func(fd uintptr) bool {
		for {
			if sent > 0 && errorPending(int(fd)) {
				return true
			}
			n, err := unix.SendmsgN(int(fd), p[sent:], nil, nil, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return false
			case err != nil:
				if sent == 0 {
					serr = err
				}
				return true
			}
			if sent += n; sent == len(p) {
				return true
			}
		}
	})
	switch {
	case sent > 0:
		return sent, nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return 0, fmt.Errorf("send: %w", os.ErrDeadlineExceeded)
	case err != nil:
		return 0, fmt.Errorf("send: %w", err)
	case serr != nil:
		return 0, os.NewSyscallError("send", serr)
	}
	return 0, nil
}

// errorPending reports whether the socket has an error or a hang-up
// waiting, without consuming it (SO_ERROR would).
func errorPending(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	for {
		_, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		return err == nil && fds[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0
	}
}

// Read implements Conn like one blocking recv(2); 0 bytes is io.EOF.
func (c *kernelConn) Read(p []byte) (int, error) {
	if !c.arm(c.f.SetReadDeadline) {
		return 0, fmt.Errorf("recv: %w", os.ErrDeadlineExceeded)
	}
	var (
		n    int
		rerr error
	)
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Read(int(fd), p)
			switch rerr {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false
			}
			return true
		}
	})
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return 0, fmt.Errorf("recv: %w", os.ErrDeadlineExceeded)
	case err != nil:
		return 0, fmt.Errorf("recv: %w", err)
	case rerr != nil:
		return 0, os.NewSyscallError("recv", rerr)
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

// SetDeadline implements Conn.
func (c *kernelConn) SetDeadline(t time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("set deadline: connection closed")
	}
	c.deadline = t
	return nil
}

// Close implements Conn. It is idempotent.
func (c *kernelConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if c.stop != nil {
		c.stop()
	}
	return c.f.Close()
}

// Info implements Conn from TCP_INFO.
func (c *kernelConn) Info() ConnInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ConnInfo{State: "CLOSE"}
	}
	ti, err := unix.GetsockoptTCPInfo(c.fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return ConnInfo{State: "UNKNOWN"}
	}
	return ConnInfo{
		State:       tcpStateName(ti.State),
		RTO:         time.Duration(ti.Rto) * time.Microsecond,
		RTT:         time.Duration(ti.Rtt) * time.Microsecond,
		Retransmits: int(ti.Total_retrans),
		Unacked:     int(ti.Unacked),
	}
}

// tcpStateName names a Linux TCP state (include/net/tcp_states.h).
func tcpStateName(s uint8) string {
	names := []string{1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
		6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}
	if int(s) < len(names) && names[s] != "" {
		return names[s]
	}
	return fmt.Sprintf("state %d", s)
}
