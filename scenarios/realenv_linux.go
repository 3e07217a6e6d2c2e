package scenarios

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
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
func (e *realEnv) Dial(ctx context.Context, port uint16, opts SockOpts) (Conn, error) {
	before := e.Peer().Accepted(port)
	fd, err := e.socket()
	if err != nil {
		return nil, err
	}
	c := &kernelConn{fd: fd, now: e.Now}
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

// socket returns a blocking TCP socket created inside the namespace. The
// namespace hands sockets out non-blocking for Go's poller; scenarios want
// the semantics of a plain blocking socket (a send that blocks and then
// returns a short count), so the descriptor is taken out of the poller.
func (e *realEnv) socket() (int, error) {
	f, err := e.ns.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return -1, fmt.Errorf("create a client socket in the namespace: %w", err)
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("client socket: %w", err)
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, fmt.Errorf("client socket: %w", err)
	}
	if dupErr != nil {
		return -1, fmt.Errorf("client socket: dup: %w", dupErr)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("client socket: make blocking: %w", err)
	}
	return fd, nil
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

// kernelConn is a blocking kernel TCP socket driven with raw system calls,
// one send(2) or recv(2) per Write or Read, as the seed's Python did.
// Cancelling the Dial context shuts the socket down, which wakes a blocked
// call.
type kernelConn struct {
	fd  int
	now func() time.Duration

	mu       sync.Mutex
	closed   bool
	stop     func() bool
	deadline time.Duration // scenario time; 0 = none
}

var _ Conn = (*kernelConn)(nil)

// shutdown wakes blocked calls (context cancelled).
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

// setTimeout sets SO_SNDTIMEO or SO_RCVTIMEO; d = 0 blocks forever.
func (c *kernelConn) setTimeout(opt int, d time.Duration) error {
	tv := unix.NsecToTimeval(d.Nanoseconds())
	return unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, opt, &tv)
}

// connect runs a blocking connect(2); timeout, if set, bounds it with
// SO_SNDTIMEO and yields os.ErrDeadlineExceeded.
func (c *kernelConn) connect(to netip.AddrPort, timeout time.Duration) error {
	sa := &unix.SockaddrInet4{Port: int(to.Port()), Addr: to.Addr().As4()}
	if timeout > 0 {
		if err := c.setTimeout(unix.SO_SNDTIMEO, timeout); err != nil {
			return fmt.Errorf("set the connect timeout: %w", err)
		}
		defer c.setTimeout(unix.SO_SNDTIMEO, 0)
	}
	err := unix.Connect(c.fd, sa)
	if err == unix.EINTR {
		// The handshake goes on; wait for it like a non-blocking connect.
		err = c.awaitConnect()
	}
	switch {
	case err == nil:
		return nil
	case timeout > 0 && (err == unix.EINPROGRESS || err == unix.EAGAIN):
		return fmt.Errorf("connect to %s: %w", to, os.ErrDeadlineExceeded)
	}
	return fmt.Errorf("connect to %s: %w", to, os.NewSyscallError("connect", err))
}

// awaitConnect waits for an interrupted connect to finish and returns its
// result.
func (c *kernelConn) awaitConnect() error {
	for {
		fds := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLOUT}}
		if _, err := unix.Poll(fds, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			return err
		}
		soerr, err := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return err
		}
		if soerr != 0 {
			return unix.Errno(soerr)
		}
		return nil
	}
}

// arm sets the kernel timeout opt from the deadline before a call; it
// returns false when the deadline has already passed.
func (c *kernelConn) arm(opt int) bool {
	c.mu.Lock()
	dl := c.deadline
	c.mu.Unlock()
	if dl == 0 {
		c.setTimeout(opt, 0)
		return true
	}
	left := dl - c.now()
	if left <= 0 {
		return false
	}
	c.setTimeout(opt, left)
	return true
}

// Write implements Conn: one send(2) with MSG_NOSIGNAL (EPIPE, not
// SIGPIPE).
func (c *kernelConn) Write(p []byte) (int, error) {
	for {
		if !c.arm(unix.SO_SNDTIMEO) {
			return 0, fmt.Errorf("send: %w", os.ErrDeadlineExceeded)
		}
		n, err := unix.SendmsgN(c.fd, p, nil, nil, unix.MSG_NOSIGNAL)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, fmt.Errorf("send: %w", os.ErrDeadlineExceeded)
		case err != nil:
			return 0, os.NewSyscallError("send", err)
		}
		return n, nil
	}
}

// Read implements Conn: one recv(2); 0 bytes is io.EOF.
func (c *kernelConn) Read(p []byte) (int, error) {
	for {
		if !c.arm(unix.SO_RCVTIMEO) {
			return 0, fmt.Errorf("recv: %w", os.ErrDeadlineExceeded)
		}
		n, err := unix.Read(c.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, fmt.Errorf("recv: %w", os.ErrDeadlineExceeded)
		case err != nil:
			return 0, os.NewSyscallError("recv", err)
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
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
	return unix.Close(c.fd)
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
