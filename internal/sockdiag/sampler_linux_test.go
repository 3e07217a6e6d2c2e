package sockdiag

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/services"
	"github.com/unplug-dev/unplug/tun"
)

// peerEcho is the echo port of the test peer.
const peerEcho = 7

// startSampler runs a Sampler on d every interval until the test ends or
// stop is called; stop returns once its final sample is taken.
func startSampler(t *testing.T, d *Dumper, opts func(uint64) (Options, bool)) (s *Sampler, stop func()) {
	t.Helper()
	s = NewSampler(d.Dump, opts, 10*time.Millisecond)
	s.OptionsEvery = 100 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Sampler.Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return s, stop
}

// connOf returns the sampled socket whose source is src.
func connOf(s *Sampler, src netip.AddrPort) (ConnSamples, bool) {
	for _, c := range s.Conns() {
		if c.Src == src {
			return c, true
		}
	}
	return ConnSamples{}, false
}

// waitConn polls the sampler until cond holds for the socket from src.
func waitConn(t *testing.T, s *Sampler, src netip.AddrPort, what string, cond func(ConnSamples) bool) ConnSamples {
	t.Helper()
	deadline := time.Now().Add(safetyTimeout)
	for {
		c, ok := connOf(s, src)
		if ok && cond(c) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket %s never %s; last: %+v", src, what, c.Last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// newPeer runs the unplug peer (echo service) on the namespace's TUN.
func newPeer(t *testing.T, ns *tun.Namespace) *stack.Peer {
	t.Helper()
	p, err := stack.New(context.Background(), stack.Options{Device: ns.Device(), NoIPv6: true, Services: services.Config{Echo: peerEcho}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// ownOptions reads options of sockets this test holds itself (outside the
// namespace, where no OptionsReader looks).
func ownOptions(socks ...rawSock) func(uint64) (Options, bool) {
	return func(inode uint64) (Options, bool) {
		for _, s := range socks {
			var o Options
			err := s.control(func(fd int) error {
				var err error
				o, err = readOptions(fd)
				return err
			})
			if err == nil && o.Inode == inode {
				return o, true
			}
		}
		return Options{}, false
	}
}

// TestSamplerSynSent: a connect to an address behind a TUN nobody reads
// stays in SYN_SENT with the retransmission timer on; the SYN is resent
// every second (tcp_syn_linear_timeouts) without backoff, and the sampler
// records each resend.
func TestSamplerSynSent(t *testing.T) {
	requireRoot(t)
	ns := newTestNamespace(t, nil)
	d := newDumper(t, ns)
	netns, _ := NetnsInode(ns.PID())
	h := startHelper(t, ns, "198.18.0.2:80 k=7/3/4 async")
	s, stop := startSampler(t, d, NewOptionsReader(netns).Options)
	src := h.socks[0].local
	waitConn(t, s, src, "resent its SYN twice", func(c ConnSamples) bool { return c.Last.Retransmits >= 2 })
	stop()
	c, _ := connOf(s, src)
	if c.Dst != netip.MustParseAddrPort("198.18.0.2:80") || c.Inode == 0 || c.Gone {
		t.Fatalf("conn = %+v", c)
	}
	var seen []int
	for _, smp := range c.Samples {
		if smp.State != StateSynSent || smp.Timer != TimerRetrans {
			t.Errorf("sample %+v: want SYN_SENT with timer on", smp)
		}
		if smp.TimerRetrans != smp.Retransmits || int(smp.TotalRetrans) != smp.Retransmits {
			t.Errorf("sample: idiag_retrans %d, retransmits %d, total %d: want equal", smp.TimerRetrans, smp.Retransmits, smp.TotalRetrans)
		}
		if linear, err := ns.Sysctl("net.ipv4.tcp_syn_linear_timeouts"); err == nil && smp.Retransmits < atoi(linear) {
			if smp.Backoff != 0 || smp.RTO != time.Second {
				t.Errorf("sample: backoff %d RTO %v during linear SYN timeouts, want 0 and 1s", smp.Backoff, smp.RTO)
			}
		}
		if len(seen) == 0 || seen[len(seen)-1] != smp.Retransmits {
			seen = append(seen, smp.Retransmits)
		}
	}
	if fmt.Sprint(seen) != "[0 1 2]" {
		t.Errorf("retransmit counts %v, want [0 1 2]", seen)
	}
	for _, e := range c.Events() {
		if e.Kind != EventRetransmit || !e.Timeout || e.Count != 1 || e.Timer != TimerRetrans {
			t.Errorf("event %+v, want one SYN resent by the timer", e)
		}
	}
	o, ok := c.LastOptions()
	if !ok || !o.KeepAlive || o.KeepIdle != 7*time.Second {
		t.Errorf("options %+v (%v), want keepalive idle 7s", o, ok)
	}
	logResends(t, c)
}

// logResends logs when each retransmission count was first sampled.
func logResends(t *testing.T, c ConnSamples) {
	t.Helper()
	var b strings.Builder
	prev := -1
	for _, smp := range c.Samples {
		if smp.TotalRetrans != uint32(prev) {
			fmt.Fprintf(&b, " %s: total %d backoff %d rto %v timer %s %v;", smp.At.Sub(c.FirstSeen).Round(time.Millisecond), smp.TotalRetrans, smp.Backoff, smp.RTO, smp.Timer, smp.TimerExpires)
			prev = int(smp.TotalRetrans)
		}
	}
	t.Logf("%s %s, %d polls, %d samples:%s", c.Src, c.Dst, c.Polls, len(c.Samples), b.String())
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// TestSamplerRetransmit: an established connection whose packets the peer
// drops retransmits with the timer on, its RTO doubling with each backoff,
// and recovers once the link heals; ss agrees with Dump along the way.
func TestSamplerRetransmit(t *testing.T) {
	requireRoot(t)
	ns := newTestNamespace(t, nil)
	d := newDumper(t, ns)
	peer := newPeer(t, ns)
	c := dial(t, ns, netip.MustParseAddrPort("198.18.0.2:7"), sockOpts{}, false)
	echo(t, c, []byte("hello"))
	s, stop := startSampler(t, d, ownOptions(c))
	src := c.local(t)
	base := waitConn(t, s, src, "sampled", func(c ConnSamples) bool { return c.Polls > 0 }).Last
	if base.RTO < 200*time.Millisecond || base.Backoff != 0 || base.Timer != TimerNone {
		t.Fatalf("before the outage: %+v", base)
	}
	rule, err := peer.Controller().AddString("drop")
	if err != nil {
		t.Fatal(err)
	}
	write(t, c, bytes.Repeat([]byte("x"), 100))
	waitConn(t, s, src, "backed off twice", func(c ConnSamples) bool { return c.Last.Backoff >= 2 })
	compareSS(t, ns, d, src)
	waitConn(t, s, src, "backed off three times", func(c ConnSamples) bool { return c.Last.Backoff >= 3 })
	if err := peer.Controller().Remove(rule); err != nil {
		t.Fatal(err)
	}
	read(t, c, 100)
	waitConn(t, s, src, "recovered", func(c ConnSamples) bool {
		return c.Last.Unacked == 0 && c.Last.Retransmits == 0 && c.Last.Timer == TimerNone
	})
	stop()
	conn, _ := connOf(s, src)
	logResends(t, conn)
	// Between events nothing but clocks moves: one sample per event.
	if len(conn.Samples) > 20 {
		t.Errorf("%d samples recorded of %d polls, want one per change", len(conn.Samples), conn.Polls)
	}
	var backoffs []int
	for _, smp := range conn.Samples {
		if smp.At.Before(base.At) || smp.Unacked == 0 {
			continue // before the outage, or after recovery
		}
		if smp.State != StateEstablished || smp.Timer != TimerRetrans {
			t.Errorf("in the outage: %s timer %q, want ESTABLISHED timer on", smp.State, smp.Timer)
		}
		if smp.RTO != base.RTO<<smp.Backoff {
			t.Errorf("backoff %d: RTO %v, want %v << %d = %v", smp.Backoff, smp.RTO, base.RTO, smp.Backoff, base.RTO<<smp.Backoff)
		}
		if smp.Retransmits != smp.Backoff || smp.TimerRetrans != smp.Retransmits {
			t.Errorf("retransmits %d, idiag_retrans %d, backoff %d: want equal", smp.Retransmits, smp.TimerRetrans, smp.Backoff)
		}
		if smp.TimerExpires > smp.RTO {
			t.Errorf("timer expires in %v, beyond the RTO %v", smp.TimerExpires, smp.RTO)
		}
		if n := len(backoffs); n == 0 || backoffs[n-1] != smp.Backoff {
			backoffs = append(backoffs, smp.Backoff)
		}
	}
	// The tail-loss probe (backoff 0), then one RTO after another; the
	// retransmission that crosses the healed link may add one more.
	for i, b := range backoffs {
		if b != i {
			t.Errorf("backoff sequence %v, want 0, 1, 2, 3 and maybe 4", backoffs)
			break
		}
	}
	if n := len(backoffs); n < 4 || n > 5 {
		t.Errorf("backoff sequence %v, want 0, 1, 2, 3 and maybe 4", backoffs)
	}
	var kinds []string
	var prevAt time.Time
	for _, e := range conn.Events() {
		k := string(e.Kind)
		if e.Kind == EventRetransmit {
			k = fmt.Sprintf("retransmit(timeout=%v,backoff=%d)", e.Timeout, e.Backoff)
			if !prevAt.IsZero() {
				t.Logf("retransmission %v after the one before (backoff %d, RTO %v)", e.At.Sub(prevAt).Round(time.Millisecond), e.Backoff, e.RTO)
			}
			prevAt = e.At
		}
		kinds = append(kinds, k)
	}
	wantKinds := "retransmit(timeout=false,backoff=0) retransmit(timeout=true,backoff=1) retransmit(timeout=true,backoff=2) retransmit(timeout=true,backoff=3)"
	if got := strings.Join(kinds, " "); !strings.HasPrefix(got, wantKinds) || !strings.HasSuffix(got, "recovered") {
		t.Errorf("events %s\nwant %s [retransmit(timeout=true,backoff=4)] recovered", got, wantKinds)
	}
	if conn.Last.TotalRetrans < 4 || conn.Last.Backoff != 0 || conn.Last.Unacked != 0 {
		t.Errorf("after recovery: %+v, want ≥ 4 retransmissions in all, backoff 0, nothing unacknowledged", conn.Last)
	}
	if o, ok := conn.LastOptions(); !ok || o.KeepAlive || o.UserTimeout != 0 {
		t.Errorf("options %+v (%v), want read, no keepalive, no user timeout", o, ok)
	}
}

// TestSamplerKeepalive: an idle connection with keepalive 1/1/2 whose peer
// goes silent sends two unanswered probes with the keepalive timer on,
// then the kernel aborts it and the sampler keeps its last sample.
func TestSamplerKeepalive(t *testing.T) {
	requireRoot(t)
	ns := newTestNamespace(t, nil)
	d := newDumper(t, ns)
	peer := newPeer(t, ns)
	netns, _ := NetnsInode(ns.PID())
	h := startHelper(t, ns, "198.18.0.2:7 k=1/1/2 echo")
	s, stop := startSampler(t, d, NewOptionsReader(netns).Options)
	src := h.socks[0].local
	waitConn(t, s, src, "sampled", func(c ConnSamples) bool { return c.Polls > 0 })
	if _, err := peer.Controller().AddString("drop"); err != nil {
		t.Fatal(err)
	}
	waitConn(t, s, src, "gone", func(c ConnSamples) bool { return c.Gone })
	stop()
	c, _ := connOf(s, src)
	var probes []int
	for _, smp := range c.Samples {
		if smp.State != StateEstablished || smp.Timer != TimerKeepalive {
			t.Errorf("sample %s timer %q, want ESTABLISHED keepalive", smp.State, smp.Timer)
		}
		if smp.TimerRetrans != smp.Probes || smp.TimerExpires > time.Second {
			t.Errorf("sample: idiag_retrans %d, probes %d, expires %v; want equal probes, at most 1s", smp.TimerRetrans, smp.Probes, smp.TimerExpires)
		}
		if n := len(probes); n == 0 || probes[n-1] != smp.Probes {
			probes = append(probes, smp.Probes)
			t.Logf("%v after first sample: %d probes", smp.At.Sub(c.FirstSeen).Round(time.Millisecond), smp.Probes)
		}
	}
	if fmt.Sprint(probes) != "[0 1 2]" {
		t.Errorf("probe counts %v, want [0 1 2]", probes)
	}
	o, ok := c.LastOptions()
	if !ok || !o.KeepAlive || o.KeepIdle != time.Second || o.KeepIntvl != time.Second || o.KeepCnt != 2 {
		t.Errorf("options %+v (%v), want keepalive 1s/1s/2", o, ok)
	}
	if !c.Gone || c.Last.Probes != 2 || c.Last.State != StateEstablished {
		t.Errorf("end: gone %v, last %+v; want gone after 2 probes", c.Gone, c.Last)
	}
	var kinds []string
	var prev time.Time
	for _, e := range c.Events() {
		kinds = append(kinds, string(e.Kind))
		if !prev.IsZero() {
			t.Logf("%s (%s timer) %v after the event before", e.Kind, e.Timer, e.At.Sub(prev).Round(time.Millisecond))
		}
		prev = e.At
	}
	if got := strings.Join(kinds, " "); got != "probe probe gone" {
		t.Errorf("events %q, want probe probe gone", got)
	}
}

// TestSamplerZeroWindow: a writer whose reader stops reading fills the
// window; its persist timer probes with growing backoff until the reader
// drains the data.
func TestSamplerZeroWindow(t *testing.T) {
	requireRoot(t)
	ns := newTestNamespace(t, nil)
	d := newDumper(t, ns)
	l := listen(t, ns, "127.0.0.1:0")
	l.control(func(fd int) error { return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
	c := dial(t, ns, l.local(t), sockOpts{sndBuf: 4096}, false)
	srv := accept(t, ns, l)
	s, stop := startSampler(t, d, nil)
	src := c.local(t)
	sent := fill(t, c)
	waitConn(t, s, src, "backed off twice on the persist timer", func(c ConnSamples) bool {
		return c.Last.Timer == TimerProbe0 && c.Last.Backoff >= 2
	})
	read(t, srv, sent)
	waitConn(t, s, src, "drained", func(c ConnSamples) bool { return c.Last.SendQ == 0 && c.Last.Timer == TimerNone })
	stop()
	conn, _ := connOf(s, src)
	persist := 0
	for _, smp := range conn.Samples {
		if smp.Timer == TimerProbe0 {
			persist++
			if smp.SendQ == 0 {
				t.Errorf("persist timer with an empty send queue: %+v", smp)
			}
		}
	}
	if persist == 0 {
		t.Error("no sample with the persist timer")
	}
	t.Logf("%d bytes sent before the window closed; %d samples, %d with the persist timer", sent, len(conn.Samples), persist)
}

// TestSamplerCloseTimeWait: one socket is followed from ESTABLISHED through
// FIN_WAIT2 (inode 0 once closed) to TIME_WAIT by its cookie; the other
// side goes CLOSE_WAIT, LAST_ACK and disappears.
func TestSamplerCloseTimeWait(t *testing.T) {
	requireRoot(t)
	ns := newTestNamespace(t, nil)
	d := newDumper(t, ns)
	l := listen(t, ns, "127.0.0.1:0")
	c := dial(t, ns, l.local(t), sockOpts{}, false)
	srv := accept(t, ns, l)
	s, stop := startSampler(t, d, nil)
	src, ino := c.local(t), inodeOf(t, c)
	waitConn(t, s, src, "sampled", func(c ConnSamples) bool { return c.Polls > 0 })
	c.Close()
	waitConn(t, s, src, "in FIN_WAIT2", func(c ConnSamples) bool { return c.Last.State == StateFinWait2 })
	srv.Close()
	waitConn(t, s, src, "in TIME_WAIT", func(c ConnSamples) bool { return c.Last.State == StateTimeWait })
	stop()
	var states []string
	var client, server *ConnSamples
	conns := s.Conns()
	for i := range conns {
		switch conns[i].Src {
		case src:
			client = &conns[i]
		case l.local(t):
			if conns[i].Dst == src {
				server = &conns[i]
			}
		}
	}
	if client == nil || server == nil {
		t.Fatalf("conns %+v: want the client and the accepted socket", conns)
	}
	for _, smp := range client.Samples {
		if n := len(states); n == 0 || states[n-1] != smp.State {
			states = append(states, smp.State)
		}
		// tcp_close moves the socket to FIN_WAIT1 and sends the FIN
		// before sock_orphan clears its inode, and inet_diag reads
		// without the socket's lock: a poll in between sees FIN_WAIT1
		// with the inode (seen once in CI). From FIN_WAIT2 on it is 0.
		if smp.State != StateEstablished && smp.State != StateFinWait1 && smp.Inode != 0 {
			t.Errorf("closed socket in %s still has inode %d", smp.State, smp.Inode)
		}
	}
	// FIN_WAIT1 lasts until the peer's ACK: a poll may catch it or not.
	if got := strings.Replace(strings.Join(states, " "), " FIN_WAIT1", "", 1); got != "ESTABLISHED FIN_WAIT2 TIME_WAIT" {
		t.Errorf("client states %q, want ESTABLISHED [FIN_WAIT1] FIN_WAIT2 TIME_WAIT", strings.Join(states, " "))
	}
	if client.Inode != ino || client.Last.Timer != TimerTimeWait || client.Gone {
		t.Errorf("client inode %d (want %d), last %+v: want TIME_WAIT with its timer", client.Inode, ino, client.Last)
	}
	if !server.Gone || server.Last.State != StateLastAck && server.Last.State != StateCloseWait {
		t.Errorf("server gone %v, last state %s; want gone after CLOSE_WAIT/LAST_ACK", server.Gone, server.Last.State)
	}
}

// echo writes p and reads it back.
func echo(t *testing.T, c rawSock, p []byte) {
	t.Helper()
	write(t, c, p)
	read(t, c, len(p))
}

// write writes all of p.
func write(t *testing.T, c rawSock, p []byte) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(safetyTimeout))
	if _, err := c.Write(p); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// read reads n bytes.
func read(t *testing.T, c rawSock, n int) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(safetyTimeout))
	buf := make([]byte, n)
	for got := 0; got < n; {
		m, err := c.Read(buf[got:])
		if err != nil {
			t.Fatalf("read after %d of %d bytes: %v", got, n, err)
		}
		got += m
	}
}

// fill writes without blocking until the socket refuses more, and returns
// how much it took.
func fill(t *testing.T, c rawSock) int {
	t.Helper()
	chunk := make([]byte, 1024)
	total := 0
	for {
		var n int
		var werr error
		c.control(func(fd int) error {
			n, werr = unix.Write(fd, chunk)
			return nil
		})
		if werr == unix.EAGAIN {
			return total
		}
		if werr != nil {
			t.Fatalf("write: %v", werr)
		}
		total += n
	}
}

// ssView is what `ss -tieon` printed about one socket.
type ssView struct {
	timer, expires string
	retrans        int
	ino, cookie    uint64
	backoff        int
	rto            time.Duration
	line           string
}

// runSS runs `ss -tieonH src SRC` inside ns and parses its one socket.
func runSS(t *testing.T, ns *tun.Namespace, src netip.AddrPort) ssView {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
	defer cancel()
	code, err := ns.Run(ctx, nil, &out, &errb, []string{"ss", "-tieonH", "src", src.String()})
	if err != nil || code != 0 {
		t.Fatalf("ss: exit %d, %v: %s", code, err, errb.String())
	}
	v := ssView{line: strings.Join(strings.Fields(out.String()), " ")}
	for _, f := range strings.Fields(out.String()) {
		k, val, ok := strings.Cut(f, ":")
		if !ok {
			continue
		}
		switch k {
		case "timer":
			parts := strings.Split(strings.Trim(val, "()"), ",")
			if len(parts) == 3 {
				v.timer, v.expires = parts[0], parts[1]
				v.retrans = atoi(parts[2])
			}
		case "ino":
			v.ino, _ = strconv.ParseUint(val, 10, 64)
		case "sk":
			v.cookie, _ = strconv.ParseUint(val, 16, 64)
		case "backoff":
			v.backoff = atoi(val)
		case "rto":
			ms, _ := strconv.ParseFloat(val, 64)
			v.rto = time.Duration(ms * float64(time.Millisecond))
		}
	}
	if v.ino == 0 {
		t.Fatalf("ss printed no socket from %s: %q", src, out.String())
	}
	return v
}

// compareSS checks Dump against ss for the socket from src: the same inode,
// cookie and timer kind, and backoff, retransmissions and RTO within what
// two dumps taken just before and after ss saw (a timer may fire between).
func compareSS(t *testing.T, ns *tun.Namespace, d *Dumper, src netip.AddrPort) {
	t.Helper()
	// The sampler shares d: Info is copied before its next dumps reuse it.
	dump := func() Socket {
		socks, err := d.Append(nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range socks {
			if s.Src == src {
				ti := *s.Info
				s.Info = &ti
				return s
			}
		}
		t.Fatalf("no socket from %s", src)
		return Socket{}
	}
	before := dump()
	v := runSS(t, ns, src)
	after := dump()
	if v.ino != before.Inode || v.cookie != before.Cookie {
		t.Errorf("ss ino %d sk %x, Dump inode %d cookie %x", v.ino, v.cookie, before.Inode, before.Cookie)
	}
	if v.timer != before.Timer && v.timer != after.Timer {
		t.Errorf("ss timer %q, Dump %q then %q", v.timer, before.Timer, after.Timer)
	}
	within := func(name string, x, lo, hi int64) {
		if x < lo || x > hi {
			t.Errorf("ss %s %d, Dump %d then %d", name, x, lo, hi)
		}
	}
	within("backoff", int64(v.backoff), int64(before.Info.Backoff), int64(after.Info.Backoff))
	within("retransmissions", int64(v.retrans), int64(before.TimerRetrans), int64(after.TimerRetrans))
	within("rto (µs)", v.rto.Microseconds(), int64(before.Info.Rto), int64(after.Info.Rto))
	t.Logf("ss: %s\nDump: timer %s %v retrans %d backoff %d rto %v", v.line, before.Timer, before.TimerExpires, before.TimerRetrans, before.Info.Backoff, time.Duration(before.Info.Rto)*time.Microsecond)
}

// TestReadTCPSysctlsNamespace reads a private namespace's settings through
// tun.Namespace.Sysctl.
func TestReadTCPSysctlsNamespace(t *testing.T) {
	requireRoot(t)
	ns := newTestNamespace(t, map[string]string{"net.ipv4.tcp_retries2": "4", "net.ipv4.tcp_keepalive_time": "600"})
	got, err := ReadTCPSysctls(ns.Sysctl)
	if err != nil {
		t.Fatal(err)
	}
	if got.Retries2 != 4 || got.KeepaliveTime != 10*time.Minute || got.KeepaliveIntvl != 75*time.Second || got.KeepaliveProbes != 9 || got.SynRetries != 6 {
		t.Errorf("ReadTCPSysctls = %+v, want retries2 4, keepalive 600s/75s/9, syn retries 6", got)
	}
	t.Logf("%+v", got)
}
