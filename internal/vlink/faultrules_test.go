package vlink

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/internal/capture"
	"github.com/unplug-dev/unplug/internal/flow"
	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack/fault"
)

// The TCP-aware fault rules (match=, after-bytes=, conn=, flow=, flows=,
// nth=, every=, after=established, after=bytes:, until=rto:, for=rtos:)
// and actions (reject, rst-at-seq, duplicate, reorder, corrupt, rate, loss
// ge) on the virtual-time pair: the same fault endpoint as on the TUN path,
// so what these tests show holds there too (cmd/unplug's
// faultrules_linux_test.go shows it against the real kernel).

// dly is the one-way link delay: enough for realistic RTOs (200 ms).
const dly = 10 * time.Millisecond

// faultEv is one fault-layer event, with the kind an independent tracker
// (the capture's) gives each segment as its sender sent it.
type faultEv struct {
	At       time.Duration
	Dir      packet.Direction
	Verdict  fault.Verdict
	Rule     int
	Action   fault.Action
	Flags    uint8
	Seq, Ack uint32
	Win      uint16
	Len      int
	IPLen    int           // the whole packet
	Delay    time.Duration // hold time of a Delayed packet
	Sport    uint16
	Dport    uint16
	Kind     flow.Kind
}

func (e faultEv) String() string {
	return fmt.Sprintf("%v %v %v rule %d flags=%#x seq=%d ack=%d win=%d len=%d %d>%d %v",
		e.At, e.Dir, e.Verdict, e.Rule, e.Flags, e.Seq, e.Ack, e.Win, e.Len, e.Sport, e.Dport, e.Kind)
}

// appPort is the client-side port of the segment.
func (e faultEv) appPort() uint16 {
	if e.Dir == packet.In {
		return e.Sport
	}
	return e.Dport
}

// faultLog is a fault.Observer keeping faultEvs.
type faultLog struct {
	mu  sync.Mutex
	tr  *capture.RetransmitTracker
	evs []faultEv
}

func newFaultLog() *faultLog { return &faultLog{tr: capture.NewRetransmitTracker()} }

func (l *faultLog) Observe(ev *fault.Event) {
	p := ev.Packet
	if !p.IsTCP() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e := faultEv{At: ev.Time.Sub(Epoch), Dir: p.Dir, Verdict: ev.Decision.Verdict, Rule: ev.Decision.Rule,
		Action: ev.Decision.Action, Flags: p.Flags, Seq: p.Seq, Ack: p.Ack, Win: p.Window, Len: p.PayloadLen,
		IPLen: p.Len, Delay: ev.Decision.Delay, Sport: p.SrcPort, Dport: p.DstPort}
	if ev.Decision.Verdict != fault.Injected {
		e.Kind = l.tr.Classify(p)
	}
	l.evs = append(l.evs, e)
}

// where returns the events f accepts.
func (l *faultLog) where(f func(faultEv) bool) []faultEv {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []faultEv
	for _, e := range l.evs {
		if f(e) {
			out = append(out, e)
		}
	}
	return out
}

// acted returns the segments rule id acted on (not the ones it made up).
func (l *faultLog) acted(id int) []faultEv {
	return l.where(func(e faultEv) bool { return e.Rule == id && e.Verdict != fault.Injected })
}

// injected returns the packets rule id made up.
func (l *faultLog) injected(id int) []faultEv {
	return l.where(func(e faultEv) bool { return e.Rule == id && e.Verdict == fault.Injected })
}

// all requires every event to satisfy f (and at least min of them).
func all(t *testing.T, what string, evs []faultEv, min int, f func(faultEv) bool) {
	t.Helper()
	if len(evs) < min {
		t.Errorf("%s: %d segments, want at least %d", what, len(evs), min)
	}
	for _, e := range evs {
		if !f(e) {
			t.Errorf("%s: unexpected segment %v", what, e)
		}
	}
}

// env is one test's pair, observer and, once established, connection.
type env struct {
	t      *testing.T
	p      *Pair
	log    *faultLog
	l      *Listener
	c, srv *Conn
}

func newEnv(t *testing.T, seed uint64) *env {
	t.Helper()
	log := newFaultLog()
	p := newPair(t, PairOptions{Delay: dly, Seed: seed, Observer: log})
	l, err := p.Listen(80)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return &env{t: t, p: p, log: log, l: l}
}

// add installs a rule and returns its id.
func (e *env) add(spec string) int {
	e.t.Helper()
	id, err := e.p.Faults.AddString(spec)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// connect opens a connection and waits until the peer accepted it.
func (e *env) connect() (c, srv *Conn) {
	e.t.Helper()
	c, err := e.p.Connect(PeerAddr4.String(), 80, time.Minute)
	if err != nil {
		e.t.Fatalf("connect: %v", err)
	}
	if err := e.p.RunUntil(func() bool {
		srv, err = e.l.Accept()
		return err == nil
	}, time.Minute); err != nil {
		e.t.Fatalf("accept: %v", err)
	}
	return c, srv
}

func (e *env) establish() *env {
	e.c, e.srv = e.connect()
	return e
}

// exchange sends req and reply across the connection and fails the test
// unless both arrive intact within limit.
func (e *env) exchange(c, srv *Conn, req, reply []byte, limit time.Duration) {
	e.t.Helper()
	m := newPump(c, srv, req, reply)
	if err := e.p.RunUntil(m.step, limit); err != nil {
		e.t.Fatalf("exchange: %v (client %s %v, server %s %v)", err, c.State(), c.Err(), srv.State(), srv.Err())
	}
	if !bytes.Equal(m.got, reply) {
		e.t.Fatal("reply corrupted")
	}
}

// download has the server send n bytes and the client read them; it
// returns what arrived by the time cond holds or limit passes.
func (e *env) download(n int, limit time.Duration, cond func(got []byte) bool) []byte {
	data := bytes.Repeat([]byte("0123456789abcdef"), n/16+1)[:n]
	rest := data
	var got []byte
	buf := make([]byte, 64<<10)
	e.p.RunUntil(func() bool {
		rest = rest[writeSome(e.srv, rest):]
		got = append(got, readSome(e.c, buf)...)
		return cond(got) || e.c.Err() != nil
	}, limit)
	if !bytes.Equal(got, data[:len(got)]) {
		e.t.Fatal("download corrupted")
	}
	return got
}

func complete(n int) func([]byte) bool { return func(b []byte) bool { return len(b) == n } }

func never([]byte) bool { return false }

// waitErr runs until c fails or limit passes and returns when the error
// came and the error.
func (e *env) waitErr(c *Conn, limit time.Duration) (time.Duration, error) {
	start := e.p.Now()
	e.p.RunUntil(func() bool { return c.Err() != nil }, limit)
	return e.p.Now() - start, c.Err()
}

const (
	fS = packet.FlagSYN
	fA = packet.FlagACK
	fF = packet.FlagFIN
	fR = packet.FlagRST
	fP = packet.FlagPSH
)

func TestMatchHandshake(t *testing.T) {
	t.Run("syn", func(t *testing.T) {
		e := newEnv(t, 1)
		id := e.add("drop match=syn")
		c, _ := e.p.Dial(PeerAddr4.String(), 80)
		_, err := e.waitErr(c, 10*time.Minute)
		mustErrno(t, "connect", err, ETIMEDOUT)
		all(t, "dropped", e.log.acted(id), 3, func(x faultEv) bool { return x.Dir == packet.In && x.Flags == fS })
		if out := e.log.where(func(x faultEv) bool { return x.Dir == packet.Out }); len(out) != 0 {
			t.Errorf("the peer answered: %v", out)
		}
	})
	t.Run("syn-ack", func(t *testing.T) {
		e := newEnv(t, 1)
		id := e.add("drop match=syn-ack")
		c, _ := e.p.Dial(PeerAddr4.String(), 80)
		_, err := e.waitErr(c, 10*time.Minute)
		mustErrno(t, "connect", err, ETIMEDOUT)
		all(t, "dropped", e.log.acted(id), 2, func(x faultEv) bool { return x.Dir == packet.Out && x.Flags == fS|fA })
		syns := e.log.where(func(x faultEv) bool { return x.Dir == packet.In && x.Flags == fS })
		all(t, "client SYNs", syns, 3, func(x faultEv) bool { return x.Verdict == fault.Pass })
		if rtx := e.log.where(func(x faultEv) bool { return x.Flags == fS && x.Kind == flow.KindRetransmit }); len(rtx) != len(syns)-1 {
			t.Errorf("%d SYN retransmissions of %d SYNs", len(rtx), len(syns))
		}
	})
	t.Run("handshake-ack", func(t *testing.T) {
		e := newEnv(t, 1)
		id := e.add("drop match=handshake-ack count=1")
		e.establish()
		all(t, "dropped", e.log.acted(id), 1, func(x faultEv) bool { return x.Dir == packet.In && x.Flags == fA && x.Len == 0 })
		if n := len(e.log.acted(id)); n != 1 {
			t.Errorf("%d handshake ACKs dropped, want 1", n)
		}
		synacks := e.log.where(func(x faultEv) bool { return x.Flags == fS|fA })
		if len(synacks) != 2 || synacks[1].Kind != flow.KindRetransmit {
			t.Errorf("SYN-ACKs %v: want the original and one retransmission", synacks)
		}
		e.exchange(e.c, e.srv, []byte(request), []byte("ok"), time.Minute)
	})
	t.Run("after=established dir=out", func(t *testing.T) {
		e := newEnv(t, 1)
		id := e.add("drop dir=out after=established")
		e.establish()
		e.srv.Write([]byte("hello"))
		e.p.Advance(10 * time.Second)
		if n, _ := e.c.Read(make([]byte, 10)); n != 0 {
			t.Fatal("data arrived")
		}
		all(t, "dropped", e.log.acted(id), 3, func(x faultEv) bool { return x.Dir == packet.Out && x.Flags&fS == 0 })
	})
}

func TestMatchSegments(t *testing.T) {
	t.Run("data", func(t *testing.T) {
		e := newEnv(t, 1).establish()
		id := e.add("drop dir=in match=data count=2")
		e.exchange(e.c, e.srv, []byte(request), []byte("reply"), time.Minute)
		acted := e.log.acted(id)
		all(t, "dropped", acted, 2, func(x faultEv) bool { return x.Len == len(request) && x.Seq == acted[0].Seq })
	})
	t.Run("pure-ack", func(t *testing.T) {
		e := newEnv(t, 1).establish()
		id := e.add("drop dir=out match=pure-ack")
		// A request that fits the first window: the reply's ACK is what the
		// client hears (a bigger one would stall with no ACK coming back).
		e.exchange(e.c, e.srv, bytes.Repeat([]byte("q"), 4<<10), []byte("r"), time.Minute)
		all(t, "dropped", e.log.acted(id), 1, func(x faultEv) bool { return x.Flags == fA && x.Len == 0 })
	})
	t.Run("fin", func(t *testing.T) {
		e := newEnv(t, 1).establish()
		id := e.add("drop match=fin")
		e.c.CloseWrite()
		e.p.Advance(5 * time.Second)
		if _, err := e.srv.Read(make([]byte, 1)); err == io.EOF {
			t.Fatal("the FIN got through")
		}
		all(t, "dropped", e.log.acted(id), 3, func(x faultEv) bool { return x.Dir == packet.In && x.Flags&fF != 0 })
		e.p.Faults.Clear()
		if err := e.p.RunUntil(func() bool { _, err := e.srv.Read(make([]byte, 1)); return err == io.EOF }, time.Minute); err != nil {
			t.Fatalf("no end-of-file once the rule went: %v", err)
		}
	})
	t.Run("rst", func(t *testing.T) {
		e := newEnv(t, 1).establish()
		id := e.add("drop match=rst")
		e.c.Abort()
		e.p.Advance(time.Minute)
		if e.srv.Err() != nil || e.srv.State() != "ESTABLISHED" {
			t.Fatalf("the peer saw the reset: %s %v", e.srv.State(), e.srv.Err())
		}
		all(t, "dropped", e.log.acted(id), 1, func(x faultEv) bool { return x.Flags&fR != 0 && x.Dir == packet.In })
	})
	t.Run("retransmission", func(t *testing.T) {
		e := newEnv(t, 1).establish()
		first := e.add("drop dir=in match=data count=1")
		rtx := e.add("drop dir=in match=retransmission")
		e.c.SetUserTimeout(3 * time.Second)
		e.c.Write([]byte(request))
		_, err := e.waitErr(e.c, time.Minute)
		mustErrno(t, "write", err, ETIMEDOUT)
		orig := e.log.acted(first)
		all(t, "first transmission", orig, 1, func(x faultEv) bool { return x.Kind == flow.KindNew })
		all(t, "retransmissions", e.log.acted(rtx), 3, func(x faultEv) bool {
			return x.Kind == flow.KindRetransmit && x.Seq == orig[0].Seq && x.Len == len(request)
		})
		if pass := e.log.where(func(x faultEv) bool { return x.Dir == packet.In && x.Len > 0 && x.Verdict == fault.Pass }); len(pass) != 0 {
			t.Errorf("data got through: %v", pass)
		}
	})
}

// TestMatchKeepaliveProbe drops keepalive probes: the idle connection dies
// of its keepalive while data still flows on another.
func TestMatchKeepaliveProbe(t *testing.T) {
	e := newEnv(t, 1)
	id := e.add("drop match=keepalive-probe")
	idle, _ := e.connect()
	busy, busySrv := e.connect()
	for _, c := range []*Conn{idle, busy} {
		if err := c.SetKeepalive(time.Second, time.Second, 3); err != nil {
			t.Fatal(err)
		}
	}
	start := e.p.Now()
	exchanges := 0
	for idle.Err() == nil && e.p.Now()-start < time.Minute {
		e.exchange(busy, busySrv, []byte("ping"), []byte("pong"), time.Minute)
		exchanges++
		e.p.Advance(300 * time.Millisecond)
	}
	mustErrno(t, "idle connection", idle.Err(), ETIMEDOUT)
	if dead := e.p.Now() - start; dead < 3*time.Second || dead > 6*time.Second {
		t.Errorf("idle connection died after %v, want ≈4s (keepalive 1s/1s/3)", dead)
	}
	if busy.Err() != nil || exchanges < 10 {
		t.Errorf("busy connection: %v after %d exchanges", busy.Err(), exchanges)
	}
	idlePort := idle.LocalAddr().Port()
	all(t, "dropped", e.log.acted(id), 3, func(x faultEv) bool {
		return x.Kind == flow.KindKeepaliveProbe && x.appPort() == idlePort && x.Len == 0
	})
}

// TestMatchZeroWindow drops zero-window probes, then window updates.
func TestMatchZeroWindow(t *testing.T) {
	fill := func(e *env) {
		e.srv.SetReceiveBuffer(64 << 10) // gVisor drops beyond a tiny buffer instead of closing the window
		e.c.SetSendBuffer(64 << 10)
		chunk := make([]byte, 16<<10)
		if err := e.p.RunUntil(func() bool {
			for {
				if _, err := e.c.Write(chunk); err != nil {
					return errors.Is(err, ErrWouldBlock) && e.p.InFlight() == 0
				}
			}
		}, time.Minute); err != nil {
			e.t.Fatalf("send buffer never filled: %v", err)
		}
	}
	drain := func(e *env) {
		buf := make([]byte, 64<<10)
		if err := e.p.RunUntil(func() bool {
			readSome(e.srv, buf)
			n, _ := e.c.Write(make([]byte, 1000))
			return n > 0
		}, 10*time.Minute); err != nil {
			e.t.Fatalf("the writer never got going again: %v", err)
		}
	}
	t.Run("zero-window-probe", func(t *testing.T) {
		e := newEnv(t, 1).establish()
		id := e.add("drop match=zero-window-probe")
		fill(e)
		e.p.Advance(time.Minute)
		all(t, "dropped", e.log.acted(id), 3, func(x faultEv) bool {
			return x.Kind == flow.KindZeroWindowProbe && x.Dir == packet.In && x.Len <= 1
		})
		if ka := e.log.where(func(x faultEv) bool { return x.Kind == flow.KindZeroWindowProbe && x.Rule == 0 }); len(ka) != 0 {
			t.Errorf("probes got through: %v", ka)
		}
		drain(e)
	})
	t.Run("window-update", func(t *testing.T) {
		e := newEnv(t, 1).establish()
		id := e.add("drop dir=out match=window-update")
		fill(e)
		drain(e)
		all(t, "dropped", e.log.acted(id), 1, func(x faultEv) bool { return x.Dir == packet.Out && x.Len == 0 && x.Win != 0 })
	})
}

func TestReject(t *testing.T) {
	t.Run("data", func(t *testing.T) {
		e := newEnv(t, 1).establish()
		id := e.add("reject dir=in match=data")
		e.c.Write([]byte(request))
		after, err := e.waitErr(e.c, time.Minute)
		mustErrno(t, "write", err, ECONNRESET)
		if after != 2*dly {
			t.Errorf("reset after %v, want at once (one round trip, %v)", after, 2*dly)
		}
		if n := len(e.log.acted(id)); n != 1 {
			t.Errorf("%d segments rejected, want 1: no retransmission", n)
		}
		all(t, "made up", e.log.injected(id), 1, func(x faultEv) bool { return x.Dir == packet.Out && x.Flags == fR })
	})
	t.Run("syn", func(t *testing.T) {
		e := newEnv(t, 1)
		e.add("reject match=syn")
		c, _ := e.p.Dial(PeerAddr4.String(), 80)
		after, err := e.waitErr(c, time.Minute)
		mustErrno(t, "connect", err, ECONNREFUSED)
		if after != 2*dly {
			t.Errorf("refused after %v, want %v", after, 2*dly)
		}
	})
	t.Run("peer data", func(t *testing.T) {
		e := newEnv(t, 1).establish()
		id := e.add("reject dir=out match=data")
		e.srv.Write([]byte("reply"))
		_, err := e.waitErr(e.srv, time.Minute)
		mustErrno(t, "peer write", err, ECONNRESET)
		all(t, "made up", e.log.injected(id), 1, func(x faultEv) bool { return x.Dir == packet.In && x.Flags == fR })
	})
}

// TestRSTAtSeq replaces the segment carrying byte 3000 of the download by
// a RST: the client gets everything before that segment, then ECONNRESET.
func TestRSTAtSeq(t *testing.T) {
	e := newEnv(t, 1).establish()
	id := e.add("rst-at-seq=3000 dir=out")
	got := e.download(10000, time.Minute, complete(10000))
	mustErrno(t, "download", e.c.Err(), ECONNRESET)
	rst := e.log.injected(id)
	replaced := e.log.acted(id)
	if len(rst) != 1 || len(replaced) != 1 || rst[0].Seq != replaced[0].Seq || rst[0].Flags&fR == 0 {
		t.Fatalf("replaced %v by %v", replaced, rst)
	}
	isn := e.log.where(func(x faultEv) bool { return x.Dir == packet.Out && x.Flags&fS != 0 })[0].Seq
	if want := int(rst[0].Seq - isn - 1); len(got) != want || len(got) >= 3000 || replaced[0].Len == 0 ||
		int(replaced[0].Seq-isn)+replaced[0].Len <= 3000 {
		t.Errorf("client got %d bytes; the RST replaced %v (relative %d)", len(got), replaced[0], replaced[0].Seq-isn)
	}
}

func TestDuplicate(t *testing.T) {
	e := newEnv(t, 1).establish()
	id := e.add("duplicate dir=in match=data")
	e.exchange(e.c, e.srv, bytes.Repeat([]byte("d"), 20<<10), []byte("ok"), time.Minute)
	acted, copies := e.log.acted(id), e.log.injected(id)
	if len(acted) < 10 || len(copies) != len(acted) {
		t.Fatalf("%d segments duplicated, %d copies", len(acted), len(copies))
	}
	for i := range acted {
		if copies[i].Seq != acted[i].Seq || copies[i].Len != acted[i].Len {
			t.Errorf("copy %v of %v", copies[i], acted[i])
		}
	}
}

// TestReorder holds every third data segment back until the next has
// passed: the receiver sees a gap and acknowledges twice.
func TestReorder(t *testing.T) {
	e := newEnv(t, 1).establish()
	id := e.add("reorder dir=out match=data every=3 gap=1")
	e.download(60<<10, time.Minute, complete(60<<10))
	acted := e.log.acted(id)
	all(t, "held", acted, 5, func(x faultEv) bool { return x.Verdict == fault.Delayed && x.Len > 0 })
	var dupAcks int
	acks := e.log.where(func(x faultEv) bool { return x.Dir == packet.In && x.Len == 0 && x.Flags == fA })
	for i := 1; i < len(acks); i++ {
		if acks[i].Ack == acks[i-1].Ack {
			dupAcks++
		}
	}
	if dupAcks == 0 {
		t.Error("the client never acknowledged out of order data twice")
	}
	if st := e.p.Faults.Status()[0]; st.Reordered != uint64(len(acted)) {
		t.Errorf("status %+v", st)
	}
}

func TestCorrupt(t *testing.T) {
	e := newEnv(t, 1).establish()
	id := e.add("corrupt dir=in match=data count=1")
	e.exchange(e.c, e.srv, []byte(request), []byte("ok"), time.Minute)
	if n := e.p.Peer.Stats().TCP.ChecksumErrors.Value(); n != 1 {
		t.Errorf("the peer saw %d checksum errors, want 1", n)
	}
	acted := e.log.acted(id)
	rtx := e.log.where(func(x faultEv) bool { return x.Dir == packet.In && x.Kind == flow.KindRetransmit })
	if len(acted) != 1 || len(rtx) == 0 || rtx[0].Seq != acted[0].Seq {
		t.Errorf("corrupted %v, retransmitted %v", acted, rtx)
	}
}

func TestRate(t *testing.T) {
	t.Run("paced", func(t *testing.T) {
		e := newEnv(t, 1).establish()
		id := e.add("rate 80kbit dir=out") // 10 kB/s
		start := e.p.Now()
		e.download(20000, time.Minute, complete(20000))
		if took := e.p.Now() - start; took < 2*time.Second {
			t.Errorf("20 kB at 10 kB/s took %v", took)
		}
		// Every packet leaves one transmission time (its size at the
		// rate) after the one before it, or after it came if the queue
		// was empty.
		var last time.Duration
		for i, x := range e.log.acted(id) {
			tx := time.Duration(x.IPLen) * 8 * time.Second / 80000
			if dep := x.At + x.Delay; i > 0 && dep-max(last, x.At) != tx {
				t.Errorf("packet %d (%d bytes) left %v after %v, want %v", i, x.IPLen, dep-max(last, x.At), max(last, x.At), tx)
			}
			last = x.At + x.Delay
		}
	})
	t.Run("tail drop", func(t *testing.T) {
		e := newEnv(t, 1).establish()
		id := e.add("rate 80kbit queue=3000 dir=out")
		e.download(60000, 5*time.Minute, complete(60000))
		st := e.p.Faults.Status()[0]
		if st.TailDropped == 0 || st.TailDropped != uint64(len(e.log.where(func(x faultEv) bool {
			return x.Rule == id && x.Verdict == fault.Dropped
		}))) {
			t.Errorf("tail drops %d in %+v", st.TailDropped, st)
		}
	})
}

// TestBurstLoss runs a download through Gilbert–Elliott loss: it completes,
// losses come in bursts, and the same seed gives the same run.
func TestBurstLoss(t *testing.T) {
	run := func(seed uint64) []faultEv {
		e := newEnv(t, seed).establish()
		e.add("loss ge p=5% r=40% dir=out match=data")
		e.download(200<<10, 10*time.Minute, complete(200<<10))
		return e.log.where(func(faultEv) bool { return true })
	}
	a, b, other := run(3), run(3), run(4)
	if !slices.Equal(a, b) || slices.Equal(a, other) {
		t.Fatal("the run must depend on the seed only")
	}
	longest, cur := 0, 0
	for _, x := range a {
		if x.Dir != packet.Out || x.Len == 0 {
			continue
		}
		if x.Verdict == fault.Dropped {
			cur++
			longest = max(longest, cur)
		} else {
			cur = 0
		}
	}
	if longest < 2 {
		t.Errorf("longest loss burst %d segments", longest)
	}
}

// TestBytesSelectors: after-bytes=N blackholes the stream past byte N;
// after=bytes:N blackholes the whole connection once N bytes went by.
func TestBytesSelectors(t *testing.T) {
	t.Run("after-bytes", func(t *testing.T) {
		e := newEnv(t, 1).establish()
		id := e.add("drop dir=out after-bytes=5000")
		got := e.download(20000, 30*time.Second, never)
		isn := e.log.where(func(x faultEv) bool { return x.Dir == packet.Out && x.Flags&fS != 0 })[0].Seq
		if len(got) > 5000 || len(got) < 5000-1500 {
			t.Errorf("client got %d bytes", len(got))
		}
		all(t, "dropped", e.log.acted(id), 3, func(x faultEv) bool { return int(x.Seq-isn)+max(x.Len, 1)-1 > 5000 })
	})
	t.Run("after=bytes", func(t *testing.T) {
		e := newEnv(t, 1).establish()
		id := e.add("drop after=bytes:5000")
		got := e.download(20000, 30*time.Second, never)
		if len(got) < 5000 || len(got) >= 20000 {
			t.Errorf("client got %d bytes", len(got))
		}
		acted := e.log.acted(id)
		first := acted[0].At
		var before int
		for _, x := range e.log.where(func(x faultEv) bool { return x.At <= first && x.Kind == flow.KindNew && x.Rule == 0 }) {
			before += x.Len
		}
		if before < 5000 {
			t.Errorf("the rule started after %d bytes", before)
		}
		if ins := e.log.where(func(x faultEv) bool { return x.Rule == id && x.Dir == packet.In }); len(ins) == 0 {
			t.Error("the client's ACKs were not blackholed")
		}
	})
}

// TestConnSelectors: conn=N and flow=HOST:PORT single out one connection.
func TestConnSelectors(t *testing.T) {
	for _, spec := range []string{"reject dir=in match=data conn=2", "reject dir=in match=data flow=198.18.0.1:49153"} {
		t.Run(spec, func(t *testing.T) {
			e := newEnv(t, 1)
			e.add(spec)
			c1, s1 := e.connect()
			c2, _ := e.connect()
			if c2.LocalAddr().Port() != 49153 {
				t.Fatalf("second connection from port %d", c2.LocalAddr().Port())
			}
			e.exchange(c1, s1, []byte(request), []byte("ok"), time.Minute)
			c2.Write([]byte(request))
			_, err := e.waitErr(c2, time.Minute)
			mustErrno(t, "second connection", err, ECONNRESET)
			e.exchange(c1, s1, []byte(request), []byte("ok"), time.Minute)
		})
	}
}

// TestFlowsSelector: flows=existing cuts the connections open when the rule
// starts; new ones work.
func TestFlowsSelector(t *testing.T) {
	e := newEnv(t, 1)
	old, _ := e.connect()
	e.add("drop flows=existing")
	c, srv := e.connect()
	e.exchange(c, srv, []byte(request), []byte("ok"), time.Minute)
	old.SetUserTimeout(2 * time.Second)
	old.Write([]byte(request))
	_, err := e.waitErr(old, time.Minute)
	mustErrno(t, "old connection", err, ETIMEDOUT)
}

// TestCounters: nth= and every= pick packets by their position.
func TestCounters(t *testing.T) {
	tests := []struct {
		spec string
		want []int // indexes of the client's messages whose first transmission is dropped
	}{
		{"drop dir=in match=data nth=2", []int{1}},
		// Retransmissions are data segments too: message 1's is the 3rd.
		{"drop dir=in match=data every=2", []int{1, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			e := newEnv(t, 1).establish()
			id := e.add(tt.spec)
			e.c.SetNoDelay(true)
			for i := range 4 {
				e.exchange(e.c, e.srv, []byte(fmt.Sprintf("message %d", i)), []byte("ok"), time.Minute)
			}
			data := e.log.where(func(x faultEv) bool { return x.Dir == packet.In && x.Len > 0 && x.Kind == flow.KindNew })
			var got []int
			for i, x := range data {
				if x.Rule == id {
					got = append(got, i)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("dropped the first transmission of messages %v, want %v", got, tt.want)
			}
		})
	}
}

// TestUntilRTO: the rule heals a connection at its Nth retransmission,
// which gets through, so the sender retransmits exactly N times.
func TestUntilRTO(t *testing.T) {
	for _, tt := range []struct {
		spec string
		n    int
	}{{"drop dir=in match=data until=rto:3", 3}, {"drop dir=in match=data for=rtos:2", 2}} {
		t.Run(tt.spec, func(t *testing.T) {
			e := newEnv(t, 1).establish()
			id := e.add(tt.spec)
			e.exchange(e.c, e.srv, []byte(request), []byte("ok"), time.Minute)
			acted := e.log.acted(id)
			all(t, "dropped", acted, tt.n, func(x faultEv) bool { return x.Seq == acted[0].Seq })
			if len(acted) != tt.n {
				t.Errorf("%d transmissions dropped, want %d", len(acted), tt.n)
			}
			if got := e.c.Stats().SendErrors.Retransmits.Value(); got != uint64(tt.n) {
				t.Errorf("the client retransmitted %d times, want %d", got, tt.n)
			}
			if st := e.p.Faults.Status()[0]; st.Healed != 1 {
				t.Errorf("status %+v, want one connection healed", st)
			}
		})
	}
}

// TestDeterminismTCPRules: the same seed gives the same run with every
// random action at once.
func TestDeterminismTCPRules(t *testing.T) {
	run := func() []faultEv {
		e := newEnv(t, 5).establish()
		for _, s := range []string{"duplicate 10% dir=in", "reorder 10% gap=2 dir=out", "corrupt 5% match=data",
			"loss ge p=3% r=50% dir=out", "rate 4mbit dir=out"} {
			e.add(s)
		}
		e.exchange(e.c, e.srv, bytes.Repeat([]byte("q"), 50<<10), bytes.Repeat([]byte("r"), 200<<10), 10*time.Minute)
		return e.log.where(func(faultEv) bool { return true })
	}
	a, b := run(), run()
	if !slices.Equal(a, b) {
		for i := range min(len(a), len(b)) {
			if a[i] != b[i] {
				t.Fatalf("runs differ at event %d:\n  %v\n  %v", i, a[i], b[i])
			}
		}
		t.Fatalf("runs differ in length: %d, %d", len(a), len(b))
	}
}
