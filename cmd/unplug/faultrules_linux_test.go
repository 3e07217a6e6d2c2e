package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unplug-dev/unplug/internal/capture"
	"github.com/unplug-dev/unplug/internal/flow"
	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
	"github.com/unplug-dev/unplug/tun"
)

// Proof, against the real kernel in a private network namespace, that the
// TCP-aware fault rules affect exactly the segments they name: every test
// runs a peer on a real TUN and counts, from the fault layer's own events,
// which segments each rule acted on. The same rules are table-tested in
// virtual time in package vlink.

// nsEvent is one fault-layer event of a netns test.
type nsEvent struct {
	dir      packet.Direction
	verdict  fault.Verdict
	rule     int
	flags    uint8
	seq      uint32
	len      int
	appPort  uint16
	peerPort uint16
	kind     flow.Kind
}

// nsLog records the fault layer's TCP events, classifying every real
// segment with the capture's tracker.
type nsLog struct {
	mu  sync.Mutex
	tr  *capture.RetransmitTracker
	evs []nsEvent
}

func (l *nsLog) Observe(ev *fault.Event) {
	p := ev.Packet
	if !p.IsTCP() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e := nsEvent{dir: p.Dir, verdict: ev.Decision.Verdict, rule: ev.Decision.Rule, flags: p.Flags, seq: p.Seq,
		len: p.PayloadLen, appPort: p.SrcPort, peerPort: p.DstPort}
	if p.Dir == packet.Out {
		e.appPort, e.peerPort = p.DstPort, p.SrcPort
	}
	if ev.Decision.Verdict != fault.Injected {
		e.kind = l.tr.Classify(p)
	}
	l.evs = append(l.evs, e)
}

func (l *nsLog) where(f func(nsEvent) bool) []nsEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []nsEvent
	for _, e := range l.evs {
		if f(e) {
			out = append(out, e)
		}
	}
	return out
}

// acted returns the real segments rule id acted on.
func (l *nsLog) acted(id int) []nsEvent {
	return l.where(func(e nsEvent) bool { return e.rule == id && e.verdict != fault.Injected })
}

// setNetnsSysctl sets a net.* sysctl of the test's own network namespace,
// refusing to run in the namespace of the process that started it (the
// outer test binary, which runs in the host's).
func setNetnsSysctl(t *testing.T, path, value string) {
	t.Helper()
	self, err1 := os.Readlink("/proc/self/ns/net")
	host, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", os.Getppid()))
	if err1 != nil || err2 != nil || self == host || os.Getenv(inNetns) != t.Name() {
		t.Fatalf("refusing to set %s outside a private network namespace (%s, %s)", path, self, host)
	}
	if err := os.WriteFile("/proc/sys/"+path, []byte(value), 0); err != nil {
		t.Fatalf("set %s in the test's netns: %v", path, err)
	}
}

// startPeer runs a peer on a TUN device in the test's namespace with the
// given rules and persona, until the test ends.
func startPeer(t *testing.T, persona string, specs ...string) (*stack.Peer, *nsLog) {
	t.Helper()
	var faults []fault.Spec
	for _, s := range specs {
		sp, err := fault.ParseSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		faults = append(faults, sp)
	}
	svc := services.DefaultConfig()
	if persona != "" {
		p, err := services.ParsePersona(persona)
		if err != nil {
			t.Fatal(err)
		}
		svc.Persona = p
	}
	dev, err := tun.Create(tun.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	log := &nsLog{tr: capture.NewRetransmitTracker()}
	peer, err := stack.New(context.Background(), stack.Options{Device: dev, Seed: 1, Faults: faults, Observer: log, Services: svc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	return peer, log
}

// dialPeer connects to the peer's port; d configures the socket.
func dialPeer(t *testing.T, port string, d net.Dialer) (net.Conn, error) {
	t.Helper()
	if d.Timeout == 0 {
		d.Timeout = time.Minute
	}
	c, err := d.Dial("tcp4", net.JoinHostPort("198.18.0.2", port))
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func mustDial(t *testing.T, port string, d net.Dialer) net.Conn {
	t.Helper()
	c, err := dialPeer(t, port, d)
	if err != nil {
		t.Fatalf("dial %s: %v", port, err)
	}
	return c
}

// userTimeout is a Dialer.Control setting TCP_USER_TIMEOUT.
func userTimeout(d time.Duration) func(string, string, syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
		})
		return serr
	}
}

// TestFaultSynAckNetns: with every SYN-ACK dropped, connect() retries its
// SYN tcp_syn_retries times and fails with ETIMEDOUT; nothing else is
// touched.
func TestFaultSynAckNetns(t *testing.T) {
	t.Parallel()
	if !requireNetns(t) {
		return
	}
	const retries = 2
	setNetnsSysctl(t, "net/ipv4/tcp_syn_retries", "2")
	if _, err := os.Stat("/proc/sys/net/ipv4/tcp_syn_linear_timeouts"); err == nil {
		// Linux 6.5+ resends the first SYNs every second (default 4
		// times) while still timing out after 1+2+4 s: back to the
		// classic doubling, so the count is 1 + tcp_syn_retries.
		setNetnsSysctl(t, "net/ipv4/tcp_syn_linear_timeouts", "0")
	}
	_, log := startPeer(t, "", "drop match=syn-ack port=80")
	_, err := dialPeer(t, "80", net.Dialer{})
	if !errors.Is(err, unix.ETIMEDOUT) {
		t.Fatalf("connect: %v, want ETIMEDOUT", err)
	}
	syns := log.where(func(e nsEvent) bool { return e.dir == packet.In && e.flags == packet.FlagSYN })
	if len(syns) != 1+retries {
		t.Errorf("the kernel sent %d SYNs, want 1 + %d retries: %+v", len(syns), retries, syns)
	}
	for i, e := range syns {
		if e.verdict != fault.Pass || (i > 0) != (e.kind == flow.KindRetransmit) {
			t.Errorf("SYN %d: %+v", i, e)
		}
	}
	acted := log.acted(1)
	synacks := log.where(func(e nsEvent) bool { return e.flags == packet.FlagSYN|packet.FlagACK })
	if len(acted) == 0 || len(acted) != len(synacks) {
		t.Errorf("dropped %d segments, %d SYN-ACKs were sent", len(acted), len(synacks))
	}
	for _, e := range acted {
		if e.dir != packet.Out || e.flags != packet.FlagSYN|packet.FlagACK || e.verdict != fault.Dropped {
			t.Errorf("dropped a segment that is not a SYN-ACK: %+v", e)
		}
	}
}

// TestFaultKeepaliveNetns: with keepalive probes dropped, an idle
// connection with keepalive dies of it (ETIMEDOUT) while data flows on
// another connection with the same keepalive settings.
func TestFaultKeepaliveNetns(t *testing.T) {
	t.Parallel()
	if !requireNetns(t) {
		return
	}
	const probes = 2
	_, log := startPeer(t, "", "drop match=keepalive-probe port=7")
	ka := net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: probes}}
	idle := mustDial(t, "7", ka)
	busy := mustDial(t, "7", ka)

	idleErr := make(chan error, 1)
	go func() {
		_, err := idle.Read(make([]byte, 1))
		idleErr <- err
	}()
	exchanges := 0
	buf := make([]byte, 4)
	for {
		select {
		case err := <-idleErr:
			if !errors.Is(err, unix.ETIMEDOUT) {
				t.Fatalf("idle connection: %v, want ETIMEDOUT", err)
			}
			if exchanges < 5 {
				t.Errorf("only %d exchanges on the busy connection", exchanges)
			}
			idlePort := uint16(idle.LocalAddr().(*net.TCPAddr).Port)
			acted := log.acted(1)
			if len(acted) != probes {
				t.Errorf("dropped %d segments, want the %d keepalive probes", len(acted), probes)
			}
			for _, e := range acted {
				if e.kind != flow.KindKeepaliveProbe || e.appPort != idlePort || e.dir != packet.In {
					t.Errorf("dropped a segment that is not the idle connection's probe: %+v", e)
				}
			}
			return
		default:
		}
		busy.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := busy.Write([]byte("ping")); err != nil {
			t.Fatalf("busy connection write after %d exchanges: %v", exchanges, err)
		}
		if _, err := io.ReadFull(busy, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("busy connection echo after %d exchanges: %q, %v", exchanges, buf, err)
		}
		exchanges++
		time.Sleep(100 * time.Millisecond) // keep the busy connection from ever idling for a second
	}
}

// TestFaultRejectNetns: reject answers at once: connect() to a rejected
// port fails with ECONNREFUSED after one SYN, and data on a connection
// gets ECONNRESET after one transmission, no retransmission.
func TestFaultRejectNetns(t *testing.T) {
	t.Parallel()
	if !requireNetns(t) {
		return
	}
	_, log := startPeer(t, "", "reject match=syn port=80", "reject dir=in match=data port=9")
	if _, err := dialPeer(t, "80", net.Dialer{}); !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("connect to a rejected port: %v, want ECONNREFUSED", err)
	}
	if n := len(log.where(func(e nsEvent) bool { return e.flags == packet.FlagSYN })); n != 1 {
		t.Errorf("%d SYNs, want 1", n)
	}

	c := mustDial(t, "9", net.Dialer{})
	c.Write([]byte("hello"))
	c.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, unix.ECONNRESET) {
		t.Fatalf("read after a rejected write: %v, want ECONNRESET", err)
	}
	data := log.where(func(e nsEvent) bool { return e.peerPort == 9 && e.len > 0 })
	if len(data) != 1 || data[0].rule != 2 || data[0].verdict != fault.Dropped {
		t.Errorf("data segments %+v, want one, rejected", data)
	}
	rst := log.where(func(e nsEvent) bool { return e.rule == 2 && e.verdict == fault.Injected })
	if len(rst) != 1 || rst[0].flags != packet.FlagRST || rst[0].dir != packet.Out {
		t.Errorf("RSTs sent %+v", rst)
	}
}

// TestFaultUntilRTONetns: until=rto:3 drops a request until the kernel's
// third retransmission, which gets through: the kernel retransmitted
// exactly three times.
func TestFaultUntilRTONetns(t *testing.T) {
	t.Parallel()
	if !requireNetns(t) {
		return
	}
	peer, log := startPeer(t, "", "drop dir=in match=data port=80 until=rto:3")
	c := mustDial(t, "80", net.Dialer{})
	waitEstablished(t, peer, c)
	io.WriteString(c, request)
	c.SetReadDeadline(time.Now().Add(time.Minute))
	body, err := io.ReadAll(c)
	if err != nil || !strings.HasPrefix(string(body), "HTTP/1.0 404") {
		t.Fatalf("reply %q, %v", body, err)
	}
	req := log.where(func(e nsEvent) bool { return e.dir == packet.In && e.len == len(request) })
	if len(req) != 4 {
		t.Fatalf("the request was sent %d times, want 1 + 3 retransmissions: %+v", len(req), req)
	}
	for i, e := range req {
		dropped := i < 3
		if (e.verdict == fault.Dropped) != dropped || (i > 0) != (e.kind == flow.KindRetransmit) || e.seq != req[0].seq {
			t.Errorf("transmission %d: %+v", i, e)
		}
	}
	var info *unix.TCPInfo
	raw, _ := c.(*net.TCPConn).SyscallConn()
	raw.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if err != nil || info.Total_retrans != 3 {
		t.Errorf("the kernel counts %d retransmissions (%v), want 3", info.Total_retrans, err)
	}
	if st := peer.Controller().Status()[0]; st.Healed != 1 || st.Dropped != 3 {
		t.Errorf("rule status %+v", st)
	}
}

// waitEstablished waits until the peer holds c as an established
// connection, so a rule acting on data cannot catch the handshake.
func waitEstablished(t *testing.T, peer *stack.Peer, c net.Conn) {
	t.Helper()
	local := c.LocalAddr().String()
	for range 500 {
		for _, conn := range peer.Services.Conns() {
			if conn.Remote.String() == local && conn.TCP.State == "ESTABLISHED" {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the peer never accepted %s", local)
}

// TestPersonasNetns: serve's personas against the real kernel.
func TestPersonasNetns(t *testing.T) {
	t.Parallel()
	if !requireNetns(t) {
		return
	}
	echo := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(time.Minute))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		_, err := io.ReadFull(c, buf)
		return err
	}
	// strike waits for a reboot or half-open persona's moment: its rules
	// appear in the controller.
	strike := func(peer *stack.Peer) {
		for range 1000 {
			if len(peer.Controller().Status()) > 0 {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatal("the persona never struck")
	}
	t.Run("silent", func(t *testing.T) {
		_, log := startPeer(t, "silent:7")
		c := mustDial(t, "7", net.Dialer{Control: userTimeout(time.Second)})
		if err := echo(c); !errors.Is(err, unix.ETIMEDOUT) {
			t.Fatalf("echo with a silent peer: %v, want ETIMEDOUT", err)
		}
		for _, e := range log.acted(1) {
			if e.dir != packet.Out || e.flags&packet.FlagSYN != 0 {
				t.Errorf("dropped %+v", e)
			}
		}
	})
	for _, tt := range []struct {
		persona string
		want    error
	}{{"reboot:1s", unix.ECONNRESET}, {"half-open:1s", unix.ETIMEDOUT}} {
		t.Run(tt.persona, func(t *testing.T) {
			peer, _ := startPeer(t, tt.persona)
			c := mustDial(t, "7", net.Dialer{Control: userTimeout(time.Second)})
			if err := echo(c); err != nil {
				t.Fatalf("echo before the persona struck: %v", err)
			}
			strike(peer)
			if err := echo(c); !errors.Is(err, tt.want) {
				t.Fatalf("echo on an old connection: %v, want %v", err, tt.want)
			}
			if err := echo(mustDial(t, "7", net.Dialer{})); err != nil {
				t.Fatalf("echo on a new connection: %v", err)
			}
		})
	}
}

// tcpInCsumErrors reads the kernel's count of TCP segments dropped for a
// bad checksum in this network namespace (/proc/net/snmp, Tcp InCsumErrors).
func tcpInCsumErrors(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		for i, name := range names {
			if name == "InCsumErrors" && i < len(fields) {
				var n int
				fmt.Sscan(fields[i], &n)
				return n
			}
		}
	}
	t.Fatal("no Tcp InCsumErrors in /proc/net/snmp")
	return 0
}

// TestFaultCorruptNetns: a corrupted segment is dropped by the kernel for
// its checksum (counted in InCsumErrors) and the peer's retransmission
// delivers the data.
func TestFaultCorruptNetns(t *testing.T) {
	t.Parallel()
	if !requireNetns(t) {
		return
	}
	_, log := startPeer(t, "", "corrupt dir=out match=data port=7 count=1")
	before := tcpInCsumErrors(t)
	c := mustDial(t, "7", net.Dialer{})
	c.SetDeadline(time.Now().Add(time.Minute))
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q, %v", buf, err)
	}
	if n := tcpInCsumErrors(t) - before; n != 1 {
		t.Errorf("the kernel dropped %d segments for bad checksums, want 1", n)
	}
	replies := log.where(func(e nsEvent) bool { return e.dir == packet.Out && e.len == 4 })
	if len(replies) != 2 || replies[0].rule != 1 || replies[1].kind != flow.KindRetransmit || replies[1].verdict != fault.Pass {
		t.Errorf("echo replies %+v, want a corrupted one and its retransmission", replies)
	}
}
