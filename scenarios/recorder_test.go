package scenarios

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/faketime"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack/fault"
)

var (
	client = netip.MustParseAddrPort("198.18.0.1:40000")
	peer   = netip.MustParseAddrPort("198.18.0.2:80")
)

// tcpPacket builds an IPv4 TCP packet (checksums are not needed: the fault
// layer's classifier does not verify them).
func tcpPacket(src, dst netip.AddrPort, flags uint8, seq, ack uint32, win uint16, payload int) []byte {
	b := make([]byte, 40+payload)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8], b[9] = 64, 6
	copy(b[12:16], src.Addr().AsSlice())
	copy(b[16:20], dst.Addr().AsSlice())
	t := b[20:]
	binary.BigEndian.PutUint16(t[0:], src.Port())
	binary.BigEndian.PutUint16(t[2:], dst.Port())
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12] = 5 << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], win)
	return b
}

// recorderHarness feeds hand-made packets to a Recorder on a manual clock.
type recorderHarness struct {
	t     *testing.T
	clock *faketime.ManualClock
	rec   *recorder
}

func newRecorderHarness(t *testing.T) *recorderHarness {
	h := &recorderHarness{t: t, clock: faketime.NewManualClock(), rec: newRecorder()}
	h.rec.begin(h.clock)
	return h
}

// at advances the clock to scenario time d.
func (h *recorderHarness) at(d time.Duration) {
	if now := h.rec.Now(); d > now {
		h.clock.Advance(d - now)
	}
}

// send shows the recorder one packet; in is client to peer.
func (h *recorderHarness) send(in bool, verdict fault.Verdict, flags uint8, seq, ack uint32, win uint16, payload int) {
	h.t.Helper()
	src, dst, dir := client, peer, packet.In
	if !in {
		src, dst, dir = peer, client, packet.Out
	}
	data := tcpPacket(src, dst, flags, seq, ack, win, payload)
	var p packet.Packet
	if err := packet.Parse(dir, data, &p); err != nil {
		h.t.Fatal(err)
	}
	h.rec.Observe(&fault.Event{Time: h.clock.Now(), Packet: &p, Data: data, Decision: fault.Decision{Verdict: verdict}})
}

const (
	syn    = packet.FlagSYN
	ackf   = packet.FlagACK
	psh    = packet.FlagPSH
	rst    = packet.FlagRST
	ms     = time.Millisecond
	isnC   = 1000
	isnP   = 5000
	inDir  = true
	outDir = false
)

// handshake opens a connection at the current time.
func (h *recorderHarness) handshake() {
	h.send(inDir, fault.Pass, syn, isnC, 0, 64240, 0)
	h.send(outDir, fault.Pass, syn|ackf, isnP, isnC+1, 29184, 0)
	h.send(inDir, fault.Pass, ackf, isnC+1, isnP+1, 502, 0)
}

func TestRecorderBackoff(t *testing.T) {
	h := newRecorderHarness(t)
	h.handshake()
	h.at(10 * ms)
	h.send(inDir, fault.Dropped, psh|ackf, isnC+1, isnP+1, 502, 21)
	for _, at := range []time.Duration{210, 410, 810} {
		h.at(at * ms)
		h.send(inDir, fault.Dropped, psh|ackf, isnC+1, isnP+1, 502, 21)
	}
	h.at(1610 * ms)
	h.send(inDir, fault.Pass, psh|ackf, isnC+1, isnP+1, 502, 21)
	h.send(outDir, fault.Pass, ackf, isnP+1, isnC+22, 229, 0)
	// Keepalive probes: seq one below what was sent, no data.
	h.at(2610 * ms)
	h.send(inDir, fault.Pass, ackf, isnC+21, isnP+1, 502, 0)
	h.at(3610 * ms)
	h.send(inDir, fault.Dropped, ackf, isnC+21, isnP+1, 502, 0)

	var rep Report
	h.rec.fill(&rep)
	want := []Retransmission{
		{T: 210 * ms, Kind: "retransmit", N: 1, Interval: 200 * ms, Verdict: "drop"},
		{T: 410 * ms, Kind: "retransmit", N: 2, Interval: 200 * ms, Ratio: 1, Verdict: "drop"},
		{T: 810 * ms, Kind: "retransmit", N: 3, Interval: 400 * ms, Ratio: 2, Verdict: "drop"},
		{T: 1610 * ms, Kind: "retransmit", N: 4, Interval: 800 * ms, Ratio: 2, Verdict: "pass"},
		{T: 2610 * ms, Kind: "keepalive-probe", N: 1, Interval: 1000 * ms, Verdict: "pass"},
		{T: 3610 * ms, Kind: "keepalive-probe", N: 2, Interval: 1000 * ms, Ratio: 1, Verdict: "drop"},
	}
	if len(rep.Retransmissions) != len(want) {
		t.Fatalf("%d retransmissions, want %d: %+v", len(rep.Retransmissions), len(want), rep.Retransmissions)
	}
	for i, w := range want {
		g := rep.Retransmissions[i]
		if g.T != w.T || g.Kind != w.Kind || g.N != w.N || g.Interval != w.Interval || fmt.Sprintf("%.3f", g.Ratio) != fmt.Sprintf("%.3f", w.Ratio) || g.Verdict != w.Verdict || g.Dir != "in" || g.Conn != 1 {
			t.Errorf("retransmission %d = %+v, want %+v", i, g, w)
		}
	}
	if rep.Retransmissions[0].Seq != 1 || rep.Retransmissions[0].Len != 21 || rep.Retransmissions[4].Seq != 21 {
		t.Errorf("relative sequence numbers: %+v", rep.Retransmissions)
	}
	c := rep.Packets
	if c.Total != 11 || c.In != 9 || c.Out != 2 || c.DroppedIn != 5 || c.RetransmitsIn != 4 || c.ProbesIn != 2 || c.PayloadIn != 21 {
		t.Errorf("counts = %+v", c)
	}
	// The peer's ACK is relative to the client's ISN: 22 = 21 bytes + SYN.
	var peerAck *Packet
	for _, ev := range rep.Timeline {
		if p := ev.Packet; p != nil && p.Dir == "out" && p.Flags == "." {
			peerAck = p
		}
	}
	if peerAck == nil || peerAck.Ack != 22 || peerAck.Seq != 1 {
		t.Errorf("peer ACK = %+v, want seq 1 ack 22", peerAck)
	}
	ratios := seriesRatios(&rep, "in", "retransmit")
	if len(ratios) != 3 || median(ratios[1:]) != 2 {
		t.Errorf("series ratios = %v", ratios)
	}
}

func TestRecorderConnections(t *testing.T) {
	h := newRecorderHarness(t)
	h.handshake()
	// A SYN retransmission keeps the connection; a new ISN on the same
	// ports is a new connection.
	h.send(inDir, fault.Dropped, syn, isnC, 0, 64240, 0)
	h.send(inDir, fault.Pass, syn, isnC+77777, 0, 64240, 0)
	h.send(outDir, fault.Pass, rst|ackf, 0, isnC+77778, 0, 0)
	var rep Report
	h.rec.fill(&rep)
	var conns []int
	for _, ev := range rep.Timeline {
		if ev.Packet != nil {
			conns = append(conns, ev.Packet.Conn)
		}
	}
	if fmt.Sprint(conns) != "[1 1 1 1 2 2]" {
		t.Errorf("connection numbers %v, want [1 1 1 1 2 2]", conns)
	}
	if len(rep.Retransmissions) != 1 || rep.Retransmissions[0].Flags != "S" {
		t.Errorf("SYN retransmission not recorded: %+v", rep.Retransmissions)
	}
}

func TestRecorderCallsAndFaults(t *testing.T) {
	h := newRecorderHarness(t)
	r := h.rec
	sp, _ := fault.ParseSpec("drop for=1s")
	r.faultAdded(1, sp)
	r.Call(EventSend, 1, 100, 100, 0, nil)
	h.at(1 * ms)
	r.Call(EventSend, 1, 100, 100, 0, nil)
	r.Call(EventSend, 1, 100, 100, 0, nil)
	h.at(500 * ms)
	r.Call(EventSend, 1, 40, 100, 499*ms, nil)
	deadline := fmt.Errorf("send: %w", os.ErrDeadlineExceeded)
	r.Call(EventSend, 1, 0, 100, 0, deadline)
	r.Call(EventSend, 1, 0, 100, 0, deadline)
	h.at(1500 * ms)
	r.Call(EventSend, 1, 0, 100, time.Second, os.NewSyscallError("send", syscall.ETIMEDOUT))
	r.Call(EventSend, 1, 0, 100, 0, os.NewSyscallError("send", syscall.EPIPE))
	r.Outcome("EPIPE", "first")
	r.Outcome(OutcomeRecovered, "second call is ignored")
	sp2, _ := fault.ParseSpec("loss 5%")
	r.faultAdded(2, sp2)
	h.at(1600 * ms)
	r.faultRemoved(2)
	sp3, _ := fault.ParseSpec("drop dir=in")
	r.faultAdded(3, sp3)
	h.at(2 * time.Second)

	var rep Report
	r.fill(&rep)
	var kinds []string
	for _, ev := range rep.Timeline {
		kinds = append(kinds, ev.Kind)
	}
	wantKinds := "[start fault-on send send send fault-off send send outcome fault-on fault-off fault-on end]"
	if fmt.Sprint(kinds) != wantKinds {
		t.Errorf("timeline kinds\n %v\nwant\n %s", kinds, wantKinds)
	}
	merged := rep.Timeline[2]
	if merged.Count != 3 || merged.Bytes != 300 || merged.End != 1*ms {
		t.Errorf("merged sends = %+v", merged)
	}
	if short := rep.Timeline[3]; short.Bytes != 40 || short.Took != 499*ms || short.Count != 0 {
		t.Errorf("short send = %+v", short)
	}
	if dl := rep.Timeline[4]; dl.Count != 2 || dl.Errno != "EAGAIN" {
		t.Errorf("merged deadlines = %+v", dl)
	}
	if len(rep.AppErrors) != 2 || rep.AppErrors[0].Errno != "ETIMEDOUT" || rep.AppErrors[1].Errno != "EPIPE" {
		t.Errorf("app errors = %+v (deadlines are not application errors)", rep.AppErrors)
	}
	if rep.Errno != "ETIMEDOUT" || rep.ErrnoAt != 1500*ms {
		t.Errorf("first errno %s at %s", rep.Errno, rep.ErrnoAt)
	}
	if rep.Outcome != "EPIPE" || rep.OutcomeDetail != "first" {
		t.Errorf("outcome %q %q: the first call must win", rep.Outcome, rep.OutcomeDetail)
	}
	wantFaults := []FaultWindow{
		{ID: 1, Spec: "drop for=1s", Start: 0, End: time.Second, Outage: true},
		{ID: 2, Spec: "loss 5%", Start: 1500 * ms, End: 1600 * ms},
		{ID: 3, Spec: "drop dir=in", Start: 1600 * ms, End: 2 * time.Second, Open: true, Outage: true},
	}
	for i, w := range wantFaults {
		if rep.Faults[i] != w {
			t.Errorf("fault %d = %+v, want %+v", i, rep.Faults[i], w)
		}
	}
}

// TestRecorderInjected: packets the fault layer makes up are shown but never
// counted as the sender's retransmissions.
func TestRecorderInjected(t *testing.T) {
	h := newRecorderHarness(t)
	h.handshake()
	h.at(10 * ms)
	h.send(inDir, fault.Pass, psh|ackf, isnC+1, isnP+1, 502, 21)
	h.send(inDir, fault.Injected, psh|ackf, isnC+1, isnP+1, 502, 21) // a duplicate
	var rep Report
	h.rec.fill(&rep)
	if len(rep.Retransmissions) != 0 {
		t.Fatalf("a duplicate made by the fault layer counted as a retransmission: %+v", rep.Retransmissions)
	}
	var last *Packet
	for _, ev := range rep.Timeline {
		if ev.Packet != nil {
			last = ev.Packet
		}
	}
	if last == nil || last.Kind != "injected" {
		t.Fatalf("last packet %+v, want the injected one", last)
	}
}
