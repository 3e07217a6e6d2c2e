package sockdiag

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unplug-dev/unplug/tun"
)

// safetyTimeout bounds waits that should end long before it; it guards
// against hangs and is never what a test asserts on.
const safetyTimeout = 30 * time.Second

// helperArg, as os.Args[1], makes the test binary the socket-holding
// program of runHelperIfRequested.
const helperArg = "sockdiag-test-helper"

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and TUN devices")
	}
}

// newTestNamespace starts a private namespace (TUN included) that the
// test's cleanup closes.
func newTestNamespace(t *testing.T, sysctls map[string]string) *tun.Namespace {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
	defer cancel()
	cfg := tun.NamespaceConfig{TUN: tun.DefaultConfig(), Sysctls: sysctls}
	cfg.TUN.Name = "h1a0"
	ns, err := tun.NewNamespace(ctx, cfg)
	if err != nil {
		t.Fatalf("NewNamespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// newDumper opens a NETLINK_SOCK_DIAG socket inside ns.
func newDumper(t *testing.T, ns *tun.Namespace) *Dumper {
	t.Helper()
	nl, err := ns.Socket(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		t.Fatalf("netlink socket: %v", err)
	}
	t.Cleanup(func() { nl.Close() })
	return NewDumper(nl)
}

// sockOpts are the options a test sets on a client socket.
type sockOpts struct {
	keepalive        bool
	idle, intvl, cnt int // seconds, seconds, count; 0 = kernel default
	userTimeoutMS    int
	noDelay          bool
	sndBuf, rcvBuf   int
	synCnt           int // TCP_SYNCNT; 0 = tcp_syn_retries
}

// apply sets o on fd.
func (o sockOpts) apply(fd int) error {
	set := func(level, opt, v int) error { return unix.SetsockoptInt(fd, level, opt, v) }
	var errs []error
	if o.keepalive {
		errs = append(errs, set(unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1))
	}
	if o.idle > 0 {
		errs = append(errs, set(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, o.idle))
	}
	if o.intvl > 0 {
		errs = append(errs, set(unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, o.intvl))
	}
	if o.cnt > 0 {
		errs = append(errs, set(unix.IPPROTO_TCP, unix.TCP_KEEPCNT, o.cnt))
	}
	if o.userTimeoutMS > 0 {
		errs = append(errs, set(unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, o.userTimeoutMS))
	}
	if o.noDelay {
		errs = append(errs, set(unix.IPPROTO_TCP, unix.TCP_NODELAY, 1))
	}
	if o.synCnt > 0 {
		errs = append(errs, set(unix.IPPROTO_TCP, unix.TCP_SYNCNT, o.synCnt))
	}
	if o.sndBuf > 0 {
		errs = append(errs, set(unix.SOL_SOCKET, unix.SO_SNDBUF, o.sndBuf))
	}
	if o.rcvBuf > 0 {
		errs = append(errs, set(unix.SOL_SOCKET, unix.SO_RCVBUF, o.rcvBuf))
	}
	return errors.Join(errs...)
}

// String renders o for the helper's command line: k=IDLE/INTVL/CNT,u=MS,syn=N,...
func (o sockOpts) String() string {
	var parts []string
	if o.keepalive {
		parts = append(parts, fmt.Sprintf("k=%d/%d/%d", o.idle, o.intvl, o.cnt))
	}
	if o.userTimeoutMS > 0 {
		parts = append(parts, "u="+strconv.Itoa(o.userTimeoutMS))
	}
	if o.noDelay {
		parts = append(parts, "nodelay")
	}
	if o.synCnt > 0 {
		parts = append(parts, "syn="+strconv.Itoa(o.synCnt))
	}
	if o.sndBuf > 0 {
		parts = append(parts, "snd="+strconv.Itoa(o.sndBuf))
	}
	if o.rcvBuf > 0 {
		parts = append(parts, "rcv="+strconv.Itoa(o.rcvBuf))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

// parseSockOpts is String's inverse.
func parseSockOpts(s string) (sockOpts, error) {
	var o sockOpts
	for _, p := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(p, "=")
		var err error
		switch k {
		case "", "-":
		case "k":
			o.keepalive = true
			_, err = fmt.Sscanf(v, "%d/%d/%d", &o.idle, &o.intvl, &o.cnt)
		case "u":
			o.userTimeoutMS, err = strconv.Atoi(v)
		case "nodelay":
			o.noDelay = true
		case "syn":
			o.synCnt, err = strconv.Atoi(v)
		case "snd":
			o.sndBuf, err = strconv.Atoi(v)
		case "rcv":
			o.rcvBuf, err = strconv.Atoi(v)
		default:
			err = fmt.Errorf("unknown option %q", k)
		}
		if err != nil {
			return o, err
		}
	}
	return o, nil
}

// inodeOf returns the inode of a socket file of ours.
func inodeOf(t *testing.T, sc syscall.Conn) uint64 {
	t.Helper()
	rc, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil || serr != nil {
		t.Fatalf("fstat: %v %v", err, serr)
	}
	return st.Ino
}

// sockaddrOf converts ap for bind and connect.
func sockaddrOf(ap netip.AddrPort) (family int, sa unix.Sockaddr) {
	if ap.Addr().Is4() {
		return unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return unix.AF_INET6, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

// addrOf converts a socket address.
func addrOf(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// rawSock is a socket of ours inside the namespace, used through raw
// system calls: net.FileConn would turn keepalive on with Go's defaults
// (15 s), overriding what the test set.
type rawSock struct {
	*os.File
	rc syscall.RawConn
}

// control runs f on the descriptor.
func (s rawSock) control(f func(fd int) error) error {
	var ferr error
	if err := s.rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// local returns the socket's own address.
func (s rawSock) local(t *testing.T) netip.AddrPort {
	t.Helper()
	var ap netip.AddrPort
	if err := s.control(func(fd int) error {
		sa, err := unix.Getsockname(fd)
		ap = addrOf(sa)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return ap
}

// newRawSock creates a TCP socket inside ns that the test's cleanup closes.
func newRawSock(t *testing.T, ns *tun.Namespace, family int) rawSock {
	t.Helper()
	f, err := ns.Socket(family, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rawSock{f, rc}
}

// listen returns a TCP listener on addr (port 0 picks one) inside ns.
func listen(t *testing.T, ns *tun.Namespace, addr string) rawSock {
	t.Helper()
	family, sa := sockaddrOf(netip.MustParseAddrPort(addr))
	l := newRawSock(t, ns, family)
	if err := l.control(func(fd int) error {
		if err := unix.Bind(fd, sa); err != nil {
			return err
		}
		return unix.Listen(fd, 16)
	}); err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	return l
}

// dial connects from inside ns with o set before connect and waits for
// the handshake unless async.
func dial(t *testing.T, ns *tun.Namespace, addr netip.AddrPort, o sockOpts, async bool) rawSock {
	t.Helper()
	family, sa := sockaddrOf(addr)
	s := newRawSock(t, ns, family)
	err := s.control(func(fd int) error {
		if err := o.apply(fd); err != nil {
			return err
		}
		return unix.Connect(fd, sa)
	})
	if err != nil && err != unix.EINPROGRESS {
		t.Fatalf("connect %s: %v", addr, err)
	}
	if async {
		return s
	}
	s.SetWriteDeadline(time.Now().Add(safetyTimeout))
	var cerr error
	werr := s.rc.Write(func(fd uintptr) bool {
		soerr, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil || soerr != 0 {
			cerr = errors.Join(err, syscall.Errno(soerr))
			return true
		}
		_, err = unix.Getpeername(int(fd))
		return err == nil
	})
	if err := errors.Join(werr, cerr); err != nil {
		t.Fatalf("connect %s: %v", addr, err)
	}
	return s
}

// accept accepts one connection with the safety timeout.
func accept(t *testing.T, ns *tun.Namespace, l rawSock) rawSock {
	t.Helper()
	l.SetReadDeadline(time.Now().Add(safetyTimeout))
	var nfd int
	var aerr error
	if err := l.rc.Read(func(fd uintptr) bool {
		nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		return aerr != unix.EAGAIN
	}); err != nil || aerr != nil {
		t.Fatalf("accept: %v %v", err, aerr)
	}
	f := os.NewFile(uintptr(nfd), "accepted")
	t.Cleanup(func() { f.Close() })
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rawSock{f, rc}
}

// helperProc is a running socket-holding program inside a namespace.
type helperProc struct {
	pid   int
	socks []helperSock
	stdin io.Closer
	done  chan error
}

// helperSock is one socket the helper connected.
type helperSock struct {
	fd    int
	local netip.AddrPort
	opts  sockOpts
}

// startHelper runs the test binary inside ns as a program that connects
// one socket per spec ("ADDR OPTS", see sockOpts.String; "ADDR OPTS async"
// does not wait for the handshake, "ADDR OPTS echo" exchanges a byte with
// an echo server) and holds them until the test ends.
func startHelper(t *testing.T, ns *tun.Namespace, specs ...string) *helperProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	h := &helperProc{stdin: inW, done: make(chan error, 1)}
	go func() {
		code, err := ns.Run(context.Background(), inR, outW, os.Stderr, append([]string{exe, helperArg}, specs...))
		if err == nil && code != 0 {
			err = fmt.Errorf("helper exited with %d", code)
		}
		outW.CloseWithError(io.EOF)
		h.done <- err
	}()
	t.Cleanup(func() {
		inW.Close()
		select {
		case err := <-h.done:
			if err != nil {
				t.Errorf("helper: %v", err)
			}
		case <-time.After(safetyTimeout):
			t.Errorf("helper still running")
		}
	})
	sc := bufio.NewScanner(outR)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "pid":
			h.pid, _ = strconv.Atoi(f[1])
		case len(f) == 3 && f[0] == "sock":
			fd, _ := strconv.Atoi(f[1])
			ap := netip.MustParseAddrPort(f[2])
			h.socks = append(h.socks, helperSock{fd: fd, local: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())})
		case len(f) == 1 && f[0] == "ready":
			go io.Copy(io.Discard, outR)
			for i := range h.socks {
				h.socks[i].opts, _ = parseSockOpts(strings.Fields(specs[i])[1])
			}
			return h
		default:
			t.Fatalf("helper said %q", sc.Text())
		}
	}
	t.Fatalf("helper ended before it was ready: %v", <-h.done)
	return nil
}

// runHelperIfRequested is the socket-holding program: it connects the
// sockets its arguments describe, prints "pid N", "sock FD LOCALADDR" for
// each and "ready", then holds them until stdin reaches EOF.
func runHelperIfRequested() {
	if len(os.Args) < 2 || os.Args[1] != helperArg {
		return
	}
	fmt.Printf("pid %d\n", os.Getpid())
	for _, spec := range os.Args[2:] {
		fd, local, err := helperConnect(spec)
		if err != nil {
			fmt.Fprintf(os.Stderr, "helper %q: %v\n", spec, err)
			os.Exit(2)
		}
		fmt.Printf("sock %d %s\n", fd, local)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// helperConnect makes one socket for runHelperIfRequested.
func helperConnect(spec string) (int, netip.AddrPort, error) {
	f := strings.Fields(spec)
	if len(f) < 2 {
		return 0, netip.AddrPort{}, errors.New("want ADDR OPTS [async]")
	}
	ap, err := netip.ParseAddrPort(f[0])
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	o, err := parseSockOpts(f[1])
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	family, sa := sockaddrOf(ap)
	async := len(f) > 2 && f[2] == "async"
	typ := unix.SOCK_STREAM
	if async {
		typ |= unix.SOCK_NONBLOCK
	}
	fd, err := unix.Socket(family, typ, 0)
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	if err := o.apply(fd); err != nil {
		return 0, netip.AddrPort{}, err
	}
	if err := unix.Connect(fd, sa); err != nil && !(async && err == unix.EINPROGRESS) {
		return 0, netip.AddrPort{}, err
	}
	if len(f) > 2 && f[2] == "echo" {
		// One byte there and back: the peer has accepted the connection.
		if _, err := unix.Write(fd, []byte{'x'}); err != nil {
			return 0, netip.AddrPort{}, err
		}
		if _, err := unix.Read(fd, make([]byte, 1)); err != nil {
			return 0, netip.AddrPort{}, err
		}
	}
	lsa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	return fd, addrOf(lsa), nil
}
