package tun

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/internal/tuntest"
	"golang.org/x/sys/unix"
)

var (
	host4 = netip.MustParseAddr("198.18.0.1")
	peer4 = netip.MustParseAddr("198.18.0.2")
	host6 = netip.MustParseAddr("fd00:198:18::1")
	peer6 = netip.MustParseAddr("fd00:198:18::2")
)

// TestNamespaceOutboundUDP sends a datagram from a socket in the namespace
// to the peer's address and finds it on the namespace's TUN, from the host
// address: the TUN is configured, up, and routes both families.
func TestNamespaceOutboundUDP(t *testing.T) {
	requireRoot(t)
	ns := newTestNamespace(t, NamespaceConfig{TUN: DefaultConfig()})
	tests := []struct {
		name     string
		network  string
		src, dst netip.Addr
	}{
		{"ipv4", "udp4", host4, peer4},
		{"ipv6 usable at once (no DAD)", "udp6", host6, peer6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sendUDPAndCapture(t, ns, tt.network, tt.src, tt.dst)
		})
	}
}

// sendUDPAndCapture dials dst:9 inside ns, sends a unique payload and
// checks the packet that reaches the TUN.
func sendUDPAndCapture(t *testing.T, ns *Namespace, network string, src, dst netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
	defer cancel()
	to := netip.AddrPortFrom(dst, 9)
	c, err := ns.Dial(ctx, network, to.String(), nil)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	payload := fmt.Appendf(nil, "unplug-test-%s-%d", network, time.Now().UnixNano())
	if _, err := c.Write(payload); err != nil {
		t.Fatalf("Write: %v", err)
	}
	pkt := awaitPacket(t, ns.Device(), func(p []byte) bool {
		u, ok := parseUDP(p)
		return ok && bytes.Equal(u.payload, payload)
	})
	u, _ := parseUDP(pkt)
	if u.dst != to || u.src.Addr() != src {
		t.Fatalf("packet %v -> %v, want %v -> %v", u.src, u.dst, src, to)
	}
	if local := c.LocalAddr().(*net.UDPAddr).AddrPort(); local.Port() != u.src.Port() {
		t.Fatalf("packet source port %d, socket bound to %v", u.src.Port(), local)
	}
}

// TestNamespaceInboundUDP writes a datagram into the TUN, as the peer
// would, and receives it on a socket inside the namespace.
func TestNamespaceInboundUDP(t *testing.T) {
	requireRoot(t)
	ns := newTestNamespace(t, NamespaceConfig{TUN: DefaultConfig()})
	f, err := ns.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.FilePacketConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	rc, _ := pc.(*net.UDPConn).SyscallConn()
	var berr error
	rc.Control(func(fd uintptr) {
		berr = unix.Bind(int(fd), &unix.SockaddrInet4{Port: 4242, Addr: host4.As4()})
	})
	if berr != nil {
		t.Fatalf("bind: %v", berr)
	}
	from := netip.AddrPortFrom(peer4, 9)
	payload := []byte("from the peer")
	if _, err := ns.Device().Write(ipv4UDP(from, netip.AddrPortFrom(host4, 4242), payload)); err != nil {
		t.Fatalf("write to TUN: %v", err)
	}
	pc.SetReadDeadline(time.Now().Add(safetyTimeout))
	buf := make([]byte, 64)
	n, addr, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatalf("ReadFrom: %v", err)
	}
	if got := addr.(*net.UDPAddr).AddrPort(); got != from || string(buf[:n]) != string(payload) {
		t.Fatalf("got %q from %v, want %q from %v", buf[:n], got, payload, from)
	}
}

// TestNamespaceInterfaces checks, from inside the namespace, that it holds
// only lo and the TUN, both up, with the configured MTU and a non-tentative
// IPv6 address.
func TestNamespaceInterfaces(t *testing.T) {
	requireRoot(t)
	cfg := DefaultConfig()
	cfg.Name, cfg.MTU = "unplugt0", 9000
	ns := newTestNamespace(t, NamespaceConfig{TUN: cfg})
	if ns.Device().Name() != "unplugt0" || ns.Device().MTU() != 9000 {
		t.Fatalf("Device() = %s MTU %d", ns.Device().Name(), ns.Device().MTU())
	}
	ifaces := strings.Fields(runOutput(t, ns, "sh", "-c", listIfaces))
	slices.Sort(ifaces)
	if !slices.Equal(ifaces, []string{"lo", "unplugt0"}) {
		t.Fatalf("interfaces in namespace = %v, want [lo unplugt0]", ifaces)
	}
	tests := []struct {
		name string
		mtu  uint32
	}{{"lo", 65536}, {"unplugt0", 9000}}
	for _, tt := range tests {
		flags, mtu := ifFlagsMTU(t, ns, tt.name)
		if flags&unix.IFF_UP == 0 || mtu != tt.mtu {
			t.Errorf("%s: flags %#x mtu %d; want up, mtu %d", tt.name, flags, mtu, tt.mtu)
		}
	}
	checkIPv6NotTentative(t, runOutput(t, ns, "cat", "/proc/net/if_inet6"), "unplugt0")

	// The agent keeps no copy of the TUN: closing the device removes it.
	ns.Device().Close()
	if got := strings.Fields(runOutput(t, ns, "sh", "-c", listIfaces)); !slices.Equal(got, []string{"lo"}) {
		t.Fatalf("interfaces after Device().Close() = %v, want [lo]", got)
	}
}

// listIfaces prints the current network namespace's interfaces.
const listIfaces = `tail -n +3 /proc/net/dev | cut -d: -f1`

// ifFlagsMTU asks the kernel, through a socket inside ns, for an
// interface's flags and MTU.
func ifFlagsMTU(t *testing.T, ns *Namespace, name string) (flags uint16, mtu uint32) {
	t.Helper()
	f, err := ns.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rc, _ := f.SyscallConn()
	var ierr error
	rc.Control(func(fd uintptr) {
		ifr, _ := unix.NewIfreq(name)
		if ierr = unix.IoctlIfreq(int(fd), unix.SIOCGIFFLAGS, ifr); ierr != nil {
			return
		}
		flags = ifr.Uint16()
		ierr = unix.IoctlIfreq(int(fd), unix.SIOCGIFMTU, ifr)
		mtu = ifr.Uint32()
	})
	if ierr != nil {
		t.Fatalf("ioctl %s: %v", name, ierr)
	}
	return flags, mtu
}

// checkIPv6NotTentative finds fd00:198:18::1 in /proc/net/if_inet6 text and
// checks it was added without DAD and is not tentative.
func checkIPv6NotTentative(t *testing.T, ifInet6, dev string) {
	t.Helper()
	for _, line := range strings.Split(ifInet6, "\n") {
		f := strings.Fields(line)
		if len(f) != 6 || f[0] != "fd000198001800000000000000000001" {
			continue
		}
		var flags uint32
		fmt.Sscanf(f[4], "%x", &flags)
		if f[5] != dev || flags&unix.IFA_F_NODAD == 0 || flags&unix.IFA_F_TENTATIVE != 0 {
			t.Fatalf("address line %q: want on %s, nodad, not tentative", line, dev)
		}
		return
	}
	t.Fatalf("fd00:198:18::1 missing from /proc/net/if_inet6:\n%s", ifInet6)
}

// runOutput runs argv in ns and returns its stdout, failing on a non-zero
// exit.
func runOutput(t *testing.T, ns *Namespace, argv ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	code, err := ns.Run(context.Background(), nil, &out, &errOut, argv)
	if err != nil || code != 0 {
		t.Fatalf("Run %v = %d, %v; stderr %q", argv, code, err, errOut.String())
	}
	return out.String()
}

// TestNamespaceSysctls applies sysctls at creation and later, reads them
// back inside, and checks the host's values never change.
func TestNamespaceSysctls(t *testing.T) {
	requireRoot(t)
	const knob = "net.ipv4.tcp_retries2"
	hostBefore, err := readSysctl(knob)
	if err != nil {
		t.Fatal(err)
	}
	first, second := otherValues(hostBefore)
	cfg := NamespaceConfig{TUN: DefaultConfig(), Sysctls: map[string]string{
		knob:                              first,
		"net.ipv6.conf.unplug0.hop_limit": "7", // applied after the TUN exists
	}}
	ns := newTestNamespace(t, cfg)
	checkHost := func(step string) {
		t.Helper()
		if now, _ := readSysctl(knob); now != hostBefore {
			t.Fatalf("%s: host %s changed from %s to %s", step, knob, hostBefore, now)
		}
	}
	checkHost("after NewNamespace")
	for name, want := range cfg.Sysctls {
		if got, err := ns.Sysctl(name); err != nil || got != want {
			t.Fatalf("Sysctl(%s) = %q, %v; want %q", name, got, err, want)
		}
	}
	if err := ns.SetSysctl(knob, second); err != nil {
		t.Fatal(err)
	}
	checkHost("after SetSysctl")
	if got := strings.TrimSpace(runOutput(t, ns, "cat", "/proc/sys/net/ipv4/tcp_retries2")); got != second {
		t.Fatalf("program inside sees %s=%s, want %s", knob, got, second)
	}
}

// otherValues returns two tcp_retries2 values that differ from host.
func otherValues(host string) (string, string) {
	var vals []string
	for _, v := range []string{"3", "5", "7"} {
		if v != host {
			vals = append(vals, v)
		}
	}
	return vals[0], vals[1]
}

func TestNamespaceSysctlErrors(t *testing.T) {
	requireRoot(t)
	ns := newTestNamespace(t, NamespaceConfig{TUN: DefaultConfig()})
	tests := []struct {
		name string
		run  func() error
		want string
	}{
		{"set non-net sysctl", func() error { return ns.SetSysctl("kernel.hostname", "x") }, "only net.*"},
		{"read missing sysctl", func() error { _, err := ns.Sysctl("net.ipv4.no_such_knob"); return err }, "no such sysctl"},
		{"invalid value", func() error { return ns.SetSysctl("net.ipv4.tcp_retries2", "many") }, "tcp_retries2"},
		{"non-net sysctl at creation", func() error {
			_, err := NewNamespace(context.Background(), NamespaceConfig{TUN: DefaultConfig(), Sysctls: map[string]string{"kernel.pid_max": "1"}})
			return err
		}, "only net.*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestNamespaceRun(t *testing.T) {
	requireRoot(t)
	ns := newTestNamespace(t, NamespaceConfig{TUN: DefaultConfig()})
	wd, _ := os.Getwd()
	plain := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(plain, []byte("no shebang"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		argv     []string
		stdin    string
		wantCode int
		wantOut  string
		wantErr  error
	}{
		{"true", []string{"true"}, "", 0, "", nil},
		{"false", []string{"false"}, "", 1, "", nil},
		{"exit code", []string{"sh", "-c", "exit 7"}, "", 7, "", nil},
		{"killed by signal", []string{"sh", "-c", "kill -9 $$"}, "", 128 + 9, "", nil},
		{"missing program", []string{"unplug-no-such-program"}, "", 127, "", exec.ErrNotFound},
		{"missing path", []string{"/nonexistent/prog"}, "", 127, "", exec.ErrNotFound},
		{"not executable", []string{plain}, "", 126, "", unix.EACCES},
		{"stdout and stderr share a writer", []string{"sh", "-c", "echo out; echo err >&2"}, "", 0, "out\nerr\n", nil},
		{"stdin copied", []string{"cat"}, "abc", 0, "abc", nil},
		{"agent variable not leaked", []string{"sh", "-c", "echo ${UNPLUG_NS_AGENT:-unset}"}, "", 0, "unset\n", nil},
		{"caller's directory", []string{"pwd"}, "", 0, wd + "\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			code, err := ns.Run(context.Background(), strings.NewReader(tt.stdin), &out, &out, tt.argv)
			if code != tt.wantCode || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("Run(%q) = %d, %v; want %d, %v", tt.argv, code, err, tt.wantCode, tt.wantErr)
			}
			if out.String() != tt.wantOut {
				t.Fatalf("output %q, want %q", out.String(), tt.wantOut)
			}
		})
	}
	t.Run("not found message", func(t *testing.T) {
		_, err := ns.Run(context.Background(), nil, nil, nil, []string{"unplug-no-such-program"})
		if err == nil || err.Error() != "exec: unplug-no-such-program: not found" {
			t.Fatalf("err = %v", err)
		}
	})
}

// cancelOn cancels a context when a line it watches for is written.
type cancelOn struct {
	buf    bytes.Buffer
	word   string
	cancel context.CancelFunc
}

func (w *cancelOn) Write(p []byte) (int, error) {
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.word) {
		w.cancel()
	}
	return len(p), nil
}

func TestNamespaceRunCancel(t *testing.T) {
	requireRoot(t)
	ns := newTestNamespace(t, NamespaceConfig{TUN: DefaultConfig()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &cancelOn{word: "started", cancel: cancel}
	code, err := ns.Run(ctx, nil, w, nil, []string{"sh", "-c", "echo started; exec sleep 1000"})
	if code != 128+int(syscall.SIGKILL) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %d, %v; want %d, context.Canceled", code, err, 128+int(syscall.SIGKILL))
	}
}

func TestNamespaceNameExists(t *testing.T) {
	requireRoot(t)
	before := childPIDs(t)
	cfg := DefaultConfig()
	cfg.Name = "lo"
	ns, err := NewNamespace(context.Background(), NamespaceConfig{TUN: cfg})
	if err == nil {
		ns.Close()
		t.Fatal("NewNamespace with TUN name lo succeeded")
	}
	if !errors.Is(err, ErrExists) || strings.Contains(err.Error(), "\n") ||
		!strings.Contains(err.Error(), "--tun NAME") || !strings.Contains(err.Error(), "--attach lo") {
		t.Fatalf("err = %q, want a one-line ErrExists naming --tun and --attach", err)
	}
	for pid := range childPIDs(t) {
		if !before[pid] {
			t.Fatalf("agent %s left behind", pid)
		}
	}
}

// TestNamespaceClose checks that Close unblocks the device's reader, kills
// and reaps the agent and the programs it runs, and that later calls fail
// with ErrClosed.
func TestNamespaceClose(t *testing.T) {
	requireRoot(t)
	ns, err := NewNamespace(context.Background(), NamespaceConfig{TUN: DefaultConfig()})
	if err != nil {
		t.Fatal(err)
	}
	agent := ns.PID()
	readErr := make(chan error, 1)
	go func() {
		buf := make([]byte, ns.Device().MTU())
		for {
			if _, err := ns.Device().Read(buf); err != nil {
				readErr <- err
				return
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pidLine := &cancelOn{word: "\n", cancel: cancel}
	runDone := make(chan error, 1)
	go func() {
		_, err := ns.Run(context.Background(), nil, pidLine, nil, []string{"sh", "-c", "echo $$; exec sleep 1000"})
		runDone <- err
	}()
	<-ctx.Done() // the program has printed its pid
	var program int
	fmt.Sscan(pidLine.buf.String(), &program)

	ns.Close()
	if err := <-readErr; !errors.Is(err, ErrClosed) {
		t.Errorf("pending Device().Read returned %v, want ErrClosed", err)
	}
	if err := <-runDone; !errors.Is(err, ErrClosed) {
		t.Errorf("pending Run returned %v, want ErrClosed", err)
	}
	if err := unix.Kill(agent, 0); err != unix.ESRCH {
		t.Errorf("agent %d still exists after Close (kill: %v)", agent, err)
	}
	tuntest.AwaitExit(t, program, safetyTimeout)
	if err := ns.Err(); !errors.Is(err, ErrClosed) {
		t.Errorf("Err() = %v, want ErrClosed", err)
	}
	if _, err := ns.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Socket after Close: %v, want ErrClosed", err)
	}
	if err := ns.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestNamespaceAgentDeath(t *testing.T) {
	requireRoot(t)
	ns := newTestNamespace(t, NamespaceConfig{TUN: DefaultConfig()})
	if ns.Err() != nil {
		t.Fatalf("Err() = %v while running", ns.Err())
	}
	if err := unix.Kill(ns.PID(), unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-ns.Done()
	for name, err := range map[string]error{
		"Err":  ns.Err(),
		"Wait": ns.Wait(),
		"Socket": func() error {
			_, err := ns.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
			return err
		}(),
	} {
		if !errors.Is(err, ErrAgentDied) || !strings.Contains(err.Error(), "killed") {
			t.Errorf("%s = %v, want ErrAgentDied mentioning the signal", name, err)
		}
	}
}

// TestNamespaceDialTCP checks that a TCP connect from the namespace sends
// its SYN over the TUN with the control hook applied, and that cancelling
// the context aborts it.
func TestNamespaceDialTCP(t *testing.T) {
	requireRoot(t)
	ns := newTestNamespace(t, NamespaceConfig{TUN: DefaultConfig()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var userTimeout int
	control := func(fd uintptr) error {
		if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 1234); err != nil {
			return err
		}
		userTimeout, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
		return nil
	}
	dialErr := make(chan error, 1)
	go func() {
		c, err := ns.Dial(ctx, "tcp", "198.18.0.2:80", control)
		if c != nil {
			c.Close()
		}
		dialErr <- err
	}()
	syn := awaitPacket(t, ns.Device(), func(p []byte) bool {
		return len(p) >= 40 && p[0]>>4 == 4 && p[9] == unix.IPPROTO_TCP &&
			netip.AddrFrom4([4]byte(p[16:20])) == peer4 && p[22] == 0 && p[23] == 80 && p[33]&0x02 != 0
	})
	if netip.AddrFrom4([4]byte(syn[12:16])) != host4 {
		t.Errorf("SYN from %v, want %v", syn[12:16], host4)
	}
	cancel()
	if err := <-dialErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial = %v, want context.Canceled", err)
	}
	if userTimeout != 1234 {
		t.Fatalf("control hook saw TCP_USER_TIMEOUT %d, want 1234", userTimeout)
	}
	if _, err := ns.Dial(context.Background(), "tcp6", "198.18.0.2:80", nil); err == nil {
		t.Fatal("tcp6 to an IPv4 address succeeded")
	}
}

// TestDeviceIOAllocs checks that reading and writing the TUN allocates
// nothing per packet.
func TestDeviceIOAllocs(t *testing.T) {
	requireRoot(t)
	ns := newTestNamespace(t, NamespaceConfig{TUN: DefaultConfig()})
	dev := ns.Device()
	f, err := ns.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rc, _ := f.SyscallConn()
	const runs = 50
	sa := &unix.SockaddrInet4{Port: 9, Addr: peer4.As4()}
	rc.Control(func(fd uintptr) {
		for range 2 * runs {
			if err := unix.Sendto(int(fd), []byte("queued"), 0, sa); err != nil {
				t.Fatalf("sendto: %v", err)
			}
		}
	})
	buf := make([]byte, dev.MTU())
	if allocs := testing.AllocsPerRun(runs, func() {
		if _, err := dev.Read(buf); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("Read allocates %.1f times per packet", allocs)
	}
	pkt := ipv4UDP(netip.AddrPortFrom(peer4, 9), netip.AddrPortFrom(host4, 9), []byte("in"))
	if allocs := testing.AllocsPerRun(runs, func() {
		if _, err := dev.Write(pkt); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("Write allocates %.1f times per packet", allocs)
	}
}

func TestNewNamespaceCancelled(t *testing.T) {
	requireRoot(t)
	before := childPIDs(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ns, err := NewNamespace(ctx, NamespaceConfig{TUN: DefaultConfig()})
	if err == nil {
		ns.Close()
		t.Fatal("NewNamespace with a cancelled context succeeded")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	for pid := range childPIDs(t) {
		if !before[pid] {
			t.Fatalf("agent %s left behind", pid)
		}
	}
}

// TestNamespaceDialKeepsSocketOptions: the connection Dial returns has the
// keepalive and Nagle settings the kernel or the control hook gave it, not
// Go's defaults (net.FileConn turns on a 15 s keepalive and TCP_NODELAY): a
// dialer for tests of "does my client notice a dead link" must not add a
// heartbeat.
func TestNamespaceDialKeepsSocketOptions(t *testing.T) {
	requireRoot(t)
	ns := newTestNamespace(t, NamespaceConfig{TUN: DefaultConfig()})
	lf, err := ns.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := lf.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var lerr error
	rc.Control(func(fd uintptr) {
		if lerr = unix.Bind(int(fd), &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); lerr == nil {
			lerr = unix.Listen(int(fd), 8)
		}
	})
	if lerr != nil {
		t.Fatal(lerr)
	}
	ln, err := net.FileListener(lf)
	lf.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	opt := func(t *testing.T, c net.Conn, level, name int) int {
		t.Helper()
		rc, err := c.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var v int
		var gerr error
		rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), level, name) })
		if gerr != nil {
			t.Fatal(gerr)
		}
		return v
	}
	for _, tc := range []struct {
		name      string
		control   func(uintptr) error
		keepalive int
		idle      int
		nodelay   int
	}{
		{"kernel defaults", nil, 0, 7200, 0},
		{"keepalive from the control hook", func(fd uintptr) error {
			if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1); err != nil {
				return err
			}
			return unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 7)
		}, 1, 7, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
			defer cancel()
			c, err := ns.Dial(ctx, "tcp4", ln.Addr().String(), tc.control)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ka := opt(t, c, unix.SOL_SOCKET, unix.SO_KEEPALIVE)
			idle := opt(t, c, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
			nd := opt(t, c, unix.IPPROTO_TCP, unix.TCP_NODELAY)
			if ka != tc.keepalive || idle != tc.idle || nd != tc.nodelay {
				t.Errorf("SO_KEEPALIVE %d, TCP_KEEPIDLE %d, TCP_NODELAY %d; want %d, %d, %d", ka, idle, nd, tc.keepalive, tc.idle, tc.nodelay)
			}
		})
	}
}

// TestNamespaceOwnEhash: a namespace gets a TCP hash table of its own
// (tcp_ehash_entries positive inside it: DefaultEhashEntries, or the size
// asked for), with the TIME_WAIT limit a namespace sharing the host's table
// has; EhashEntries < 0 shares the host's (negative). The agent's PID is
// the process in the namespace, and its sockets are there too.
func TestNamespaceOwnEhash(t *testing.T) {
	requireRoot(t)
	tw := map[string]string{}
	for _, tc := range []struct {
		name    string
		entries int
		want    string
	}{
		{"default", 0, fmt.Sprint(DefaultEhashEntries)},
		{"1024", 1024, "1024"},
		{"shared", -1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := newTestNamespace(t, NamespaceConfig{TUN: DefaultConfig(), EhashEntries: tc.entries})
			got, err := ns.Sysctl("net.ipv4.tcp_ehash_entries")
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" && !strings.HasPrefix(got, "-") || tc.want != "" && got != tc.want {
				t.Errorf("tcp_ehash_entries %s, want %s (negative: the host's)", got, cmp.Or(tc.want, "negative"))
			}
			if tw[tc.name], err = ns.Sysctl("net.ipv4.tcp_max_tw_buckets"); err != nil {
				t.Fatal(err)
			}
			self, _ := os.Readlink("/proc/self/ns/net")
			agent, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", ns.PID()))
			if err != nil || agent == self {
				t.Fatalf("agent namespace %q (%v), this process's %q", agent, err, self)
			}
			f, err := ns.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var nsOf string
			rc, _ := f.SyscallConn()
			rc.Control(func(fd uintptr) {
				nfd, err := unix.IoctlRetInt(int(fd), unix.SIOCGSKNS)
				if err == nil {
					nsOf, _ = os.Readlink(fmt.Sprintf("/proc/self/fd/%d", nfd))
					unix.Close(nfd)
				}
			})
			if nsOf != agent {
				t.Errorf("socket's namespace %q, agent's %q", nsOf, agent)
			}
		})
	}
	if tw["default"] != tw["shared"] || tw["1024"] != tw["shared"] {
		t.Errorf("tcp_max_tw_buckets %v: an own table should keep the shared table's limit", tw)
	}
}
