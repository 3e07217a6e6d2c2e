package sockdiag

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unplug-dev/unplug/tun"
)

// TestDumpLoopback: sockets connected inside a private namespace appear in
// Dump with their addresses, inode, state, keepalive timer and tcp_info,
// for IPv4, IPv6 and an IPv6 socket talking IPv4.
func TestDumpLoopback(t *testing.T) {
	requireRoot(t)
	ns := newTestNamespace(t, nil)
	d := newDumper(t, ns)
	opts := sockOpts{keepalive: true, idle: 7, intvl: 3, cnt: 4, userTimeoutMS: 1234}
	for _, tc := range []struct {
		name, listen string
		family       int
	}{
		{"ipv4", "127.0.0.1:0", unix.AF_INET},
		{"ipv6", "[::1]:0", unix.AF_INET6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := listen(t, ns, tc.listen)
			laddr := l.local(t)
			c := dial(t, ns, laddr, opts, false)
			s := accept(t, ns, l)
			socks, err := d.Dump()
			if err != nil {
				t.Fatalf("Dump: %v", err)
			}
			cl, ok := find(socks, inodeOf(t, c))
			if !ok {
				t.Fatalf("client socket (inode %d) not in dump %+v", inodeOf(t, c), socks)
			}
			want := Socket{Family: tc.family, Src: c.local(t), Dst: laddr, State: StateEstablished, Inode: inodeOf(t, c), UID: 0, Timer: TimerKeepalive}
			if cl.Family != want.Family || cl.Src != want.Src || cl.Dst != want.Dst || cl.State != want.State || cl.UID != want.UID || cl.Timer != want.Timer {
				t.Errorf("client = %+v\nwant  %+v", cl, want)
			}
			// The keepalive timer was armed with TCP_KEEPIDLE=7 s at connect.
			if cl.TimerExpires <= 6*time.Second || cl.TimerExpires > 7*time.Second || cl.TimerRetrans != 0 {
				t.Errorf("client timer expires in %v with %d probes, want (6s, 7s] and 0", cl.TimerExpires, cl.TimerRetrans)
			}
			if cl.Cookie == 0 {
				t.Error("client cookie is 0")
			}
			if cl.Info == nil || cl.Info.State != 1 || cl.Info.Rto == 0 || cl.Info.Retransmits != 0 || cl.Info.Backoff != 0 {
				t.Errorf("client tcp_info = %+v, want ESTABLISHED with an RTO and no retransmissions", cl.Info)
			}
			srv, ok := find(socks, inodeOf(t, s))
			if !ok || srv.Src != laddr || srv.Dst != want.Src || srv.State != StateEstablished || srv.Timer != TimerNone {
				t.Errorf("accepted socket = %+v (found %v), want ESTABLISHED %s -> %s without timer", srv, ok, laddr, want.Src)
			}
			lis, ok := find(socks, inodeOf(t, l))
			if !ok || lis.State != StateListen || lis.Src != laddr {
				t.Errorf("listener = %+v (found %v), want LISTEN on %s", lis, ok, laddr)
			}
			if cl.Cookie == srv.Cookie || cl.Cookie == lis.Cookie {
				t.Errorf("cookies not unique: client %d, accepted %d, listener %d", cl.Cookie, srv.Cookie, lis.Cookie)
			}
		})
	}
}

// TestDumpMappedIPv4: an AF_INET6 socket connected to ::ffff:127.0.0.1 is
// listed by the IPv6 dump with its addresses unmapped.
func TestDumpMappedIPv4(t *testing.T) {
	requireRoot(t)
	ns := newTestNamespace(t, nil)
	d := newDumper(t, ns)
	l := listen(t, ns, "[::]:0")
	laddr := l.local(t)
	target := netip.AddrPortFrom(netip.MustParseAddr("::ffff:127.0.0.1"), laddr.Port())
	f := dial(t, ns, target, sockOpts{}, false)
	accept(t, ns, l)
	socks, err := d.Dump()
	if err != nil {
		t.Fatal(err)
	}
	s, ok := find(socks, inodeOf(t, f))
	want := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), laddr.Port())
	if !ok || s.Family != unix.AF_INET6 || s.Dst != want || !s.Src.Addr().Is4() {
		t.Fatalf("mapped socket = %+v (found %v), want family AF_INET6 to %s with an IPv4 source", s, ok, want)
	}
}

// benchNamespace returns a namespace holding 201 TCP sockets (100
// connections, both ends, and a listener) and a Dumper for it.
func benchNamespace(b *testing.B) (*tun.Namespace, *Dumper) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	ns, err := tun.NewNamespace(context.Background(), tun.NamespaceConfig{TUN: tun.DefaultConfig()})
	if err != nil {
		b.Fatal(err)
	}
	nl, err := ns.Socket(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		b.Fatal(err)
	}
	l, err := ns.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		b.Fatal(err)
	}
	rc, _ := l.SyscallConn()
	var port int
	rc.Control(func(fd uintptr) {
		unix.Bind(int(fd), &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
		unix.Listen(int(fd), 128)
		sa, _ := unix.Getsockname(int(fd))
		port = sa.(*unix.SockaddrInet4).Port
	})
	var conns []io.Closer
	for range 100 {
		c, err := ns.Dial(context.Background(), "tcp", "127.0.0.1:"+strconv.Itoa(port), nil)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
	}
	b.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
		l.Close()
		nl.Close()
		ns.Close()
	})
	return ns, NewDumper(nl)
}

// BenchmarkDump lists a namespace holding 201 TCP sockets.
func BenchmarkDump(b *testing.B) {
	_, d := benchNamespace(b)
	if socks, err := d.Dump(); err != nil || len(socks) != 201 {
		b.Fatalf("%d sockets, %v; want 201", len(socks), err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := d.Dump(); err != nil {
			b.Fatal(err)
		}
	}
}

// ssStates maps ss's state names to the kernel's.
var ssStates = map[string]string{
	"ESTAB": StateEstablished, "SYN-SENT": StateSynSent, "SYN-RECV": StateSynRecv,
	"FIN-WAIT-1": StateFinWait1, "FIN-WAIT-2": StateFinWait2, "TIME-WAIT": StateTimeWait,
	"UNCONN": StateClose, "CLOSE-WAIT": StateCloseWait, "LAST-ACK": StateLastAck,
	"LISTEN": StateListen, "CLOSING": StateClosing,
}

// TestDumpMatchesSS: for sockets in every common state, Dump and
// `ss -tanieoH` inside the namespace agree on state, addresses, inode,
// cookie and timer.
func TestDumpMatchesSS(t *testing.T) {
	requireRoot(t)
	ns := newTestNamespace(t, nil)
	d := newDumper(t, ns)
	l := listen(t, ns, "127.0.0.1:0")
	laddr := l.local(t)
	dial(t, ns, laddr, sockOpts{keepalive: true, idle: 7, intvl: 3, cnt: 4}, false) // ESTABLISHED, keepalive
	accept(t, ns, l)
	tw := dial(t, ns, laddr, sockOpts{}, false) // closed first: TIME_WAIT
	twSrv := accept(t, ns, l)
	fw := dial(t, ns, laddr, sockOpts{}, false) // closed, peer open: FIN_WAIT2 / CLOSE_WAIT
	accept(t, ns, l)
	dial(t, ns, netip.MustParseAddrPort("198.18.0.2:80"), sockOpts{}, true) // nobody reads the TUN: SYN_SENT
	tw.Close()
	twSrv.Close()
	fw.Close()
	want := map[string]bool{StateListen: true, StateEstablished: true, StateTimeWait: true, StateFinWait2: true, StateCloseWait: true, StateSynSent: true}
	var socks []Socket
	deadline := time.Now().Add(safetyTimeout)
	for {
		var err error
		if socks, err = d.Append(nil); err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, s := range socks {
			seen[s.State] = true
		}
		if fmt.Sprint(seen) == fmt.Sprint(want) { // maps print sorted
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("states %v, want %v", seen, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
	defer cancel()
	if code, err := ns.Run(ctx, nil, &out, &errb, []string{"ss", "-tanieoH"}); err != nil || code != 0 {
		t.Fatalf("ss: %d %v %s", code, err, errb.String())
	}
	t.Logf("ss -tanieoH:\n%s", out.String())
	type ssLine struct {
		state, timer string
		ino, cookie  uint64
	}
	lines := map[[2]string]ssLine{}
	for _, line := range strings.Split(out.String(), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		sl := ssLine{state: ssStates[f[0]]}
		for _, kv := range f[5:] {
			k, v, _ := strings.Cut(kv, ":")
			switch k {
			case "timer":
				sl.timer, _, _ = strings.Cut(strings.TrimPrefix(v, "("), ",")
			case "ino":
				sl.ino, _ = strconv.ParseUint(v, 10, 64)
			case "sk":
				sl.cookie, _ = strconv.ParseUint(v, 16, 64)
			}
		}
		lines[[2]string{f[3], f[4]}] = sl
	}
	for _, s := range socks {
		dst := s.Dst.String()
		if s.State == StateListen {
			dst = "0.0.0.0:*"
		}
		sl, ok := lines[[2]string{s.Src.String(), dst}]
		if !ok {
			t.Errorf("%s %s -> %s: not in ss's output", s.State, s.Src, dst)
			continue
		}
		if sl.state != s.State || sl.ino != s.Inode || sl.cookie != s.Cookie || sl.timer != s.Timer && !(sl.timer == "" && s.Timer == TimerNone) {
			t.Errorf("%s -> %s: Dump %s ino %d sk %x timer %q; ss %s ino %d sk %x timer %q",
				s.Src, dst, s.State, s.Inode, s.Cookie, s.Timer, sl.state, sl.ino, sl.cookie, sl.timer)
		}
	}
	if len(lines) != len(socks) {
		t.Errorf("ss lists %d sockets, Dump %d", len(lines), len(socks))
	}
}
