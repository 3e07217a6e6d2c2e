package fault

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/faketime"

	"github.com/unplug-dev/unplug/internal/packet"
)

func parsed(t *testing.T, dir packet.Direction, b []byte) *packet.Packet {
	t.Helper()
	var p packet.Packet
	if err := packet.Parse(dir, b, &p); err != nil {
		t.Fatalf("parse: %v", err)
	}
	return &p
}

func TestParsePacket(t *testing.T) {
	p := parsed(t, packet.In, tcp4(40000, 80, packet.FlagSYN, 7, 0))
	if p.Version != 4 || p.Proto != packet.ProtoTCP || p.SrcPort != 40000 || p.DstPort != 80 || p.Seq != 7 || p.Flags != packet.FlagSYN || p.Port() != 80 {
		t.Fatalf("ipv4 parse: %+v", p)
	}
	p = parsed(t, packet.Out, tcp6(80, 40000, packet.FlagACK|packet.FlagPSH, 100))
	if p.Version != 6 || p.Proto != packet.ProtoTCP || p.PayloadLen != 100 || p.Port() != 80 {
		t.Fatalf("ipv6 parse: %+v", p)
	}
	full := tcp4(1, 2, packet.FlagACK, 0, 1000)
	var q packet.Packet
	if err := packet.ParsePrefix(packet.In, full[:60], len(full), &q); err != nil || q.PayloadLen != 1000 {
		t.Fatalf("prefix parse: %+v %v", q, err)
	}
	for _, bad := range [][]byte{nil, {0x45}, {0x4f, 0, 0, 10}, {0x20, 1, 2}, tcp4(1, 2, 0, 0, 0)[:30]} {
		if err := packet.Parse(packet.In, bad, &q); err == nil {
			t.Errorf("Parse(%x) succeeded", bad)
		}
	}
}

func TestDecide(t *testing.T) {
	syn := tcp4(40000, 80, packet.FlagSYN, 0, 0)
	data := tcp4(40000, 80, packet.FlagACK|packet.FlagPSH, 0, 10)
	ack := tcp4(40000, 80, packet.FlagACK, 0, 0)
	other := tcp4(40000, 7, packet.FlagACK, 0, 0)
	tests := []struct {
		spec string
		dir  packet.Direction
		pkt  []byte
		want Verdict
	}{
		{"drop", packet.In, data, Dropped},
		{"drop dir=in", packet.Out, data, Pass},
		{"drop dir=out", packet.Out, data, Dropped},
		{"drop port=80", packet.In, data, Dropped},
		{"drop port=80", packet.In, other, Pass},
		{"drop flags=syn", packet.In, syn, Dropped},
		{"drop flags=syn", packet.In, data, Pass},
		{"drop flags=data", packet.In, data, Dropped},
		{"drop flags=data", packet.In, ack, Pass},
		{"drop flags=ack-only", packet.In, ack, Dropped},
		{"drop flags=ack-only", packet.In, syn, Pass},
		{"delay 10ms", packet.In, data, Delayed},
		{"drop after=1s", packet.In, data, Pass},
		{"loss 100%", packet.In, data, Dropped},
	}
	for _, tt := range tests {
		t.Run(tt.spec+"/"+tt.dir.String(), func(t *testing.T) {
			c := NewController(faketime.NewManualClock(), 1)
			id, err := c.AddString(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			d := c.Decide(parsed(t, tt.dir, tt.pkt))
			if d.Verdict != tt.want {
				t.Fatalf("verdict %v, want %v", d.Verdict, tt.want)
			}
			if tt.want != Pass && d.Rule != id {
				t.Fatalf("rule %d, want %d", d.Rule, id)
			}
		})
	}
}

// TestSpecLiteralZeroDir: a Spec built as a literal, with no Dir, selects
// both directions, as the zero selectors promise, and reports Both.
func TestSpecLiteralZeroDir(t *testing.T) {
	data := tcp4(40000, 80, packet.FlagACK|packet.FlagPSH, 0, 10)
	tests := []struct {
		name string
		sp   Spec
		dir  packet.Direction
		want Verdict
	}{
		{"drop/in", Spec{Action: ActDrop}, packet.In, Dropped},
		{"drop/out", Spec{Action: ActDrop}, packet.Out, Dropped},
		{"delay/out", Spec{Action: ActDelay, Delay: 10 * time.Millisecond}, packet.Out, Delayed},
		{"explicit in/out", Spec{Action: ActDrop, Dir: packet.In}, packet.Out, Pass},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewController(faketime.NewManualClock(), 1)
			c.Add(tt.sp)
			if d := c.Decide(parsed(t, tt.dir, data)); d.Verdict != tt.want {
				t.Fatalf("Spec %+v on a %v packet: verdict %v, want %v", tt.sp, tt.dir, d.Verdict, tt.want)
			}
		})
	}
	c := NewController(faketime.NewManualClock(), 1)
	c.Add(Spec{Action: ActDrop})
	if st := c.Status(); len(st) != 1 || st[0].Spec != "drop" {
		t.Fatalf("Status after Add(Spec{Action: ActDrop}) = %+v, want one rule \"drop\" (both directions)", st)
	}
}

func TestScheduleAndCount(t *testing.T) {
	clock := faketime.NewManualClock()
	c := NewController(clock, 1)
	c.Add(Spec{Action: ActDrop, Dir: packet.Both, After: time.Second, For: 2 * time.Second})
	p := parsed(t, packet.In, tcp4(1, 80, packet.FlagACK, 0, 1))
	steps := []struct {
		at    time.Duration
		want  Verdict
		state string
	}{
		{0, Pass, "pending"}, {time.Second, Dropped, "active"}, {2900 * time.Millisecond, Dropped, "active"}, {3 * time.Second, Pass, "expired"},
	}
	var now time.Duration
	for _, s := range steps {
		clock.Advance(s.at - now)
		now = s.at
		if got := c.Decide(p).Verdict; got != s.want {
			t.Fatalf("at %v: %v, want %v", s.at, got, s.want)
		}
		if st := c.Status()[0].State; st != s.state {
			t.Fatalf("at %v: state %s, want %s", s.at, st, s.state)
		}
	}

	c.Clear()
	c.Add(Spec{Action: ActDrop, Dir: packet.Both, Count: 2})
	var dropped int
	for range 5 {
		if c.Decide(p).Verdict == Dropped {
			dropped++
		}
	}
	st := c.Status()[0]
	if dropped != 2 || st.Dropped != 2 || st.State != "expired" {
		t.Fatalf("count=2 dropped %d, status %+v", dropped, st)
	}
}

func TestLossIsSeededAndProportional(t *testing.T) {
	run := func(seed uint64) (pattern []bool, drops int) {
		c := NewController(faketime.NewManualClock(), seed)
		c.AddString("loss 20%")
		p := parsed(t, packet.In, tcp4(1, 80, packet.FlagACK, 0, 1))
		for range 10000 {
			d := c.Decide(p).Verdict == Dropped
			pattern = append(pattern, d)
			if d {
				drops++
			}
		}
		return
	}
	a, n := run(42)
	b, _ := run(42)
	c, _ := run(43)
	if n < 1800 || n > 2200 {
		t.Fatalf("20%% loss dropped %d of 10000", n)
	}
	same := func(x, y []bool) bool {
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	if !same(a, b) || same(a, c) {
		t.Fatal("loss pattern must depend on the seed only")
	}
}

func TestRemoveAndStatus(t *testing.T) {
	c := NewController(faketime.NewManualClock(), 1)
	a := c.Add(Spec{Action: ActDrop, Dir: packet.In})
	b := c.Add(Spec{Action: ActDrop, Dir: packet.Out})
	if err := c.Remove(a); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(a); err == nil {
		t.Fatal("removing twice succeeded")
	}
	if st := c.Status(); len(st) != 1 || st[0].ID != b || st[0].Spec != "drop dir=out" {
		t.Fatalf("status %+v", st)
	}
}

// BenchmarkDecideNoMatch measures the pass-through cost with ten rules that
// match nothing; it must not allocate.
func BenchmarkDecideNoMatch(b *testing.B) {
	c := NewController(faketime.NewManualClock(), 1)
	for port := range 10 {
		c.Add(Spec{Action: ActDrop, Dir: packet.Both, Port: uint16(1000 + port)})
	}
	pkt := tcp4(40000, 9, packet.FlagACK, 0, 1400)
	var p packet.Packet
	b.ReportAllocs()
	for b.Loop() {
		packet.Parse(packet.In, pkt, &p)
		if c.Decide(&p).Verdict != Pass {
			b.Fatal("matched")
		}
	}
}

// BenchmarkDecideLoss measures a loss rule deciding a stream of TCP
// segments: the flow tracker and the per-segment draw.
func BenchmarkDecideLoss(b *testing.B) {
	c := NewController(faketime.NewManualClock(), 1)
	c.AddString("loss 5%")
	var p packet.Packet
	packet.Parse(packet.In, tcp4(40000, 9, packet.FlagACK, 1, 1448), &p)
	b.ReportAllocs()
	for b.Loop() {
		c.Decide(&p)
		p.Seq += 1448
	}
}

// TestLossIsKeyedBySegment: a loss rule's fate for a segment depends on the
// seed, the connection's number, the relative sequence number and how
// often the segment was sent — not on the initial sequence numbers, the
// ports, or how the connections' packets interleave — and a
// retransmission of a lost segment gets a fresh draw.
func TestLossIsKeyedBySegment(t *testing.T) {
	const segs, mss = 300, 1000
	type flowSpec struct {
		sport uint16
		isn   uint32
	}
	run := func(seed uint64, flows [2]flowSpec, interleave bool) (fates [2][]bool) {
		c := NewController(faketime.NewManualClock(), seed)
		c.AddString("loss 10%")
		send := func(f int, flags uint8, seq uint32, payload int) bool {
			s := seg{src: app4, dst: peer4, sport: flows[f].sport, dport: 80, flags: flags, seq: flows[f].isn + seq, win: 65535, payload: payload}
			return c.Decide(parsed(t, packet.In, s.build())).Verdict == Dropped
		}
		for f := range 2 { // SYNs in the same order: connection numbers agree
			for send(f, packet.FlagSYN, 0, 0) {
			}
		}
		one := func(f, i int) {
			fates[f] = append(fates[f], send(f, packet.FlagACK, 1+uint32(i*mss), mss))
		}
		for i := range segs {
			if interleave {
				one(0, i)
				one(1, i)
			} else {
				one(0, i)
			}
		}
		if !interleave {
			for i := range segs {
				one(1, i)
			}
		}
		return fates
	}
	a := run(1, [2]flowSpec{{1000, 7}, {2000, 1 << 31}}, false)
	b := run(1, [2]flowSpec{{3333, 99999}, {4444, 12345}}, true)
	c := run(2, [2]flowSpec{{1000, 7}, {2000, 1 << 31}}, false)
	lost := 0
	for f := range 2 {
		for i := range segs {
			if a[f][i] != b[f][i] {
				t.Fatalf("connection %d segment %d: lost=%v in one order, %v in the other", f+1, i, a[f][i], b[f][i])
			}
			if a[f][i] {
				lost++
			}
		}
	}
	// 600 segments at 10 %: mean 60, σ ≈ 7.3.
	if lost < 30 || lost > 90 {
		t.Errorf("lost %d of %d segments at 10%%", lost, 2*segs)
	}
	if fmt.Sprint(a) == fmt.Sprint(c) {
		t.Error("seeds 1 and 2 lost the same segments")
	}
	if fmt.Sprint(a[0]) == fmt.Sprint(a[1]) {
		t.Error("both connections lost the same segments")
	}

	// A retransmission is a new draw: at 50 % a segment sent again and
	// again gets through, and the n-th transmission's fate is fixed.
	fates := func() []bool {
		ctl := NewController(faketime.NewManualClock(), 5)
		ctl.AddString("loss 50%")
		var out []bool
		for range 40 {
			s := seg{src: app4, dst: peer4, sport: 1, dport: 80, flags: packet.FlagACK, seq: 1, win: 65535, payload: 100}
			out = append(out, ctl.Decide(parsed(t, packet.In, s.build())).Verdict == Dropped)
		}
		return out
	}
	x, y := fates(), fates()
	passed := 0
	for i := range x {
		if x[i] != y[i] {
			t.Fatalf("transmission %d: fates differ between identical runs", i+1)
		}
		if !x[i] {
			passed++
		}
	}
	if passed == 0 || passed == len(x) {
		t.Errorf("50%% loss let %d of %d transmissions of one segment through", passed, len(x))
	}
}

// TestConcerns: a rule that Concerns reports as not concerning a
// connection's direction leaves every segment of it alone (Decide passes
// it and no count, flow or state changes), whatever its flags, sequence
// number or length: a super-packet's segments may then pass unjudged.
// The want columns are Concerns for the connection's data segments in
// each direction at the start.
func TestConcerns(t *testing.T) {
	tests := []struct {
		spec            string
		wantIn, wantOut bool
	}{
		{"drop", true, true},
		{"drop dir=in", true, false},
		{"drop dir=out", false, true},
		{"drop port=80", true, true},
		{"drop port=81", false, false},
		{"drop flow=198.18.0.1:40000", true, true},
		{"drop flow=198.18.0.2:80", true, true},
		{"drop flow=198.18.0.1:40001", false, false},
		{"drop flags=syn", true, true}, // judged segment by segment
		{"drop count=1 port=80", true, true},
		{"drop nth=2 dir=in", true, false},
		{"drop after=1s", false, false},
		{"delay 10ms port=81", false, false},
		{"rate 1mbit dir=in", true, false},
		{"rate 1mbit port=81", false, false},
		// Tracking rules see both directions of a connection in scope.
		{"loss 50% dir=out", true, true},
		{"loss 50% port=81", false, false},
		{"drop after=established dir=out port=80", true, true},
		{"drop match=retransmission dir=in port=81", false, false},
		{"rst-at-seq=1000 port=81", false, false},
		{"reject match=data dir=out", false, true},
	}
	const iss, irs = 1000, 5000
	conn := []struct {
		dir packet.Direction
		pkt []byte
	}{
		{packet.In, in(packet.FlagSYN, iss, 0, 65535, 0)},
		{packet.Out, out(packet.FlagSYN|packet.FlagACK, irs, iss+1, 65535, 0)},
		{packet.In, in(packet.FlagACK, iss+1, irs+1, 65535, 0)},
		{packet.In, in(packet.FlagACK, iss+1, irs+1, 65535, 1448)},
		{packet.In, in(packet.FlagACK|packet.FlagPSH, iss+1449, irs+1, 65535, 1448)},
		{packet.Out, out(packet.FlagACK, irs+1, iss+2897, 65535, 0)},
		{packet.Out, out(packet.FlagACK|packet.FlagPSH, irs+1, iss+2897, 65535, 100)},
		{packet.Out, out(packet.FlagACK|packet.FlagPSH, irs+1, iss+2897, 65535, 100)}, // retransmitted
		{packet.In, in(packet.FlagACK, iss+1449, irs+1, 65535, 1448)},                 // retransmitted
		{packet.In, in(packet.FlagACK|packet.FlagFIN, iss+2897, irs+101, 65535, 0)},
		{packet.Out, out(packet.FlagACK|packet.FlagFIN, irs+101, iss+2898, 65535, 0)},
		{packet.In, in(packet.FlagRST, iss+2898, 0, 0, 0)},
	}
	dataIn, dataOut := conn[3], conn[6]
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			clock := &testClock{}
			c := NewController(clock, 1)
			if _, err := c.AddString(tt.spec); err != nil {
				t.Fatal(err)
			}
			if got := c.Concerns(parsed(t, dataIn.dir, dataIn.pkt)); got != tt.wantIn {
				t.Errorf("Concerns(data in) = %v, want %v", got, tt.wantIn)
			}
			if got := c.Concerns(parsed(t, dataOut.dir, dataOut.pkt)); got != tt.wantOut {
				t.Errorf("Concerns(data out) = %v, want %v", got, tt.wantOut)
			}
			for round := range 2 {
				for i, s := range conn {
					p := parsed(t, s.dir, s.pkt)
					concerns := c.Concerns(p)
					before, tracked := c.Status(), c.TrackedConns()
					d := c.Decide(p)
					if concerns {
						continue
					}
					if d != (Decision{}) {
						t.Errorf("round %d, segment %d (%v): Concerns false, Decide %+v", round, i, s.dir, d)
					}
					if after := c.Status(); !reflect.DeepEqual(after, before) || c.TrackedConns() != tracked {
						t.Errorf("round %d, segment %d (%v): Concerns false, Decide changed the state:\n%+v (%d conns)\n%+v (%d conns)", round, i, s.dir, before, tracked, after, c.TrackedConns())
					}
				}
				clock.Advance(2 * time.Second) // past after=1s
			}
		})
	}
}
