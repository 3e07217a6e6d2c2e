package sockdiag

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
