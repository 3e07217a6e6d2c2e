package fault

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/faketime"

	"github.com/unplug-dev/unplug/internal/packet"
)

// convStep is one segment of the scripted test connection.
type convStep struct {
	label string
	dir   packet.Direction
	b     []byte
}

// conversation is one connection from SYN to RST that contains every kind
// of segment the match= classes name, as the fault layer sees it. The app
// (198.18.0.1:40000, ISN 1000) talks to the peer (198.18.0.2:80, ISN 5000).
var conversation = []convStep{
	{"syn", packet.In, in(packet.FlagSYN, 1000, 0, 64240, 0)},
	{"syn-rtx", packet.In, in(packet.FlagSYN, 1000, 0, 64240, 0)},
	{"synack", packet.Out, out(packet.FlagSYN|packet.FlagACK, 5000, 1001, 65535, 0)},
	{"hs-ack", packet.In, in(packet.FlagACK, 1001, 5001, 502, 0)},
	{"data1", packet.In, in(packet.FlagACK|packet.FlagPSH, 1001, 5001, 502, 100)}, // relative bytes 1-100
	{"ack1", packet.Out, out(packet.FlagACK, 5001, 1101, 65535, 0)},
	{"data1-rtx", packet.In, in(packet.FlagACK|packet.FlagPSH, 1001, 5001, 502, 100)},
	{"resp", packet.Out, out(packet.FlagACK|packet.FlagPSH, 5001, 1101, 65535, 200)},
	{"ack-resp", packet.In, in(packet.FlagACK, 1101, 5201, 502, 0)},
	{"winupd", packet.In, in(packet.FlagACK, 1101, 5201, 1000, 0)},
	{"ka", packet.In, in(packet.FlagACK, 1100, 5201, 1000, 0)},
	{"ka-ack", packet.Out, out(packet.FlagACK, 5201, 1101, 65535, 0)},
	{"zw", packet.Out, out(packet.FlagACK, 5201, 1101, 0, 0)},
	{"zwp", packet.In, in(packet.FlagACK, 1100, 5201, 1000, 0)},
	{"zw-open", packet.Out, out(packet.FlagACK, 5201, 1101, 4096, 0)},
	{"data2", packet.In, in(packet.FlagACK|packet.FlagPSH, 1101, 5201, 1000, 1000)}, // relative bytes 101-1100
	{"fin", packet.In, in(packet.FlagFIN|packet.FlagACK, 2101, 5201, 1000, 0)},
	{"fin-ack", packet.Out, out(packet.FlagFIN|packet.FlagACK, 5201, 2102, 4096, 0)},
	{"last-ack", packet.In, in(packet.FlagACK, 2102, 5202, 1000, 0)},
	{"rst", packet.In, in(packet.FlagRST, 2102, 0, 0, 0)},
}

// TestSelectors replays the conversation against one rule at a time and
// checks which segments it acts on.
func TestSelectors(t *testing.T) {
	all := func() []string {
		var l []string
		for _, s := range conversation {
			l = append(l, s.label)
		}
		return l
	}()
	tests := []struct {
		spec string
		want []string // labels the rule acts on
	}{
		{"drop match=syn", []string{"syn", "syn-rtx"}},
		{"drop match=syn-ack", []string{"synack"}},
		{"drop match=handshake-ack", []string{"hs-ack"}},
		{"drop match=data", []string{"data1", "data1-rtx", "resp", "data2"}},
		{"drop match=pure-ack", []string{"hs-ack", "ack1", "ack-resp", "winupd", "ka", "ka-ack", "zw", "zwp", "zw-open", "last-ack"}},
		{"drop match=fin", []string{"fin", "fin-ack"}},
		{"drop match=rst", []string{"rst"}},
		{"drop match=retransmission", []string{"syn-rtx", "data1-rtx"}},
		{"drop match=keepalive-probe", []string{"ka"}},
		{"drop match=zero-window-probe", []string{"zwp"}},
		{"drop match=window-update", []string{"winupd", "zw-open"}},
		{"drop match=syn,fin dir=out", []string{"fin-ack"}},
		{"drop match=retransmission,rst", []string{"syn-rtx", "data1-rtx", "rst"}},
		{"drop match=retransmission flags=syn", []string{"syn-rtx"}},
		{"drop after-bytes=100 dir=in", []string{"ack-resp", "winupd", "data2", "fin", "last-ack", "rst"}},
		{"drop after-bytes=150 dir=out", []string{"resp", "ka-ack", "zw", "zw-open", "fin-ack"}},
		{"drop after-bytes=200 dir=out", []string{"ka-ack", "zw", "zw-open", "fin-ack"}},
		{"drop after-bytes=150 match=data", []string{"resp", "data2"}},
		{"drop after=established dir=in", []string{"data1", "data1-rtx", "ack-resp", "winupd", "ka", "zwp", "data2", "fin", "last-ack", "rst"}},
		{"drop after=established dir=out", []string{"ack1", "resp", "ka-ack", "zw", "zw-open", "fin-ack"}},
		{"drop after=bytes:100 dir=in", []string{"data1-rtx", "ack-resp", "winupd", "ka", "zwp", "data2", "fin", "last-ack", "rst"}},
		{"drop after=bytes:300", []string{"ack-resp", "winupd", "ka", "ka-ack", "zw", "zwp", "zw-open", "data2", "fin", "fin-ack", "last-ack", "rst"}},
		{"drop flows=new", all},
		{"drop flows=existing", nil},
		{"drop conn=1", all},
		{"drop conn=2", nil},
		{"drop flow=198.18.0.1:40000", all},
		{"drop flow=198.18.0.2:80 dir=out", []string{"synack", "ack1", "resp", "ka-ack", "zw", "zw-open", "fin-ack"}},
		{"drop flow=198.18.0.1:40001", nil},
		{"drop dir=in nth=3", []string{"hs-ack"}},
		{"drop dir=out every=2", []string{"ack1", "ka-ack", "zw-open"}},
		{"drop match=data dir=in count=1", []string{"data1"}},
		{"drop match=data dir=in until=rto:1", []string{"data1"}},
		{"drop dir=in until=rto:2", []string{"syn", "syn-rtx", "hs-ack", "data1"}},
		{"drop match=syn until=rto:1", []string{"syn"}},
		{"reject match=data dir=in", []string{"data1", "data1-rtx", "data2"}},
		{"rst-at-seq=50 dir=in", []string{"data1"}},
		{"rst-at-seq=150 dir=in", []string{"data2"}},
		{"rst-at-seq=1 dir=out", []string{"resp"}},
		{"rst-at-seq=1100", []string{"data2"}},
		{"rst-at-seq=1101 dir=in", []string{"fin"}},
		{"rst-at-seq=1102 dir=in", nil},
		{"duplicate match=synack", nil},
		{"duplicate match=syn-ack", []string{"synack"}},
		{"corrupt dir=out match=data", []string{"resp"}},
		{"reorder match=fin gap=2", []string{"fin", "fin-ack"}},
		{"delay 1ms match=window-update", []string{"winupd", "zw-open"}},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			c := NewController(faketime.NewManualClock(), 1)
			sp, err := ParseSpec(tt.spec)
			if err != nil {
				if strings.Contains(tt.spec, "synack") {
					return // the class is syn-ack: a typo must be rejected
				}
				t.Fatal(err)
			}
			id := c.Add(sp)
			var got []string
			for _, s := range conversation {
				d := c.Decide(parsed(t, s.dir, s.b))
				if d.Rule == id {
					got = append(got, s.label)
					if d.Action != sp.Action {
						t.Errorf("%s: action %v, want %v", s.label, d.Action, sp.Action)
					}
				} else if d != (Decision{}) {
					t.Errorf("%s: decision %+v without the rule", s.label, d)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("acted on %v\nwant        %v", got, tt.want)
			}
		})
	}
}

// TestVerdictsOfActions checks the decision each action returns.
func TestVerdictsOfActions(t *testing.T) {
	data := in(packet.FlagACK|packet.FlagPSH, 1001, 5001, 502, 100)
	tests := []struct {
		spec    string
		verdict Verdict
		arg     int
	}{
		{"reject", Dropped, 0},
		{"duplicate", Pass, 0},
		{"corrupt", Dropped, -1},
		{"reorder", Delayed, 1},
		{"reorder gap=7", Delayed, 7},
		{"rate 1mbit", Delayed, 0},
		{"loss ge p=100% h=0", Pass, 0}, // Good state first: delivered, then Bad
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			c := NewController(faketime.NewManualClock(), 1)
			c.AddString(tt.spec)
			d := c.Decide(parsed(t, packet.In, data))
			if d.Verdict != tt.verdict {
				t.Fatalf("verdict %v, want %v", d.Verdict, tt.verdict)
			}
			if tt.arg >= 0 && d.Arg != tt.arg {
				t.Errorf("arg %d, want %d", d.Arg, tt.arg)
			}
			if d.Verdict != Pass || d.Rule != 0 {
				if c := c.Comment(d); !strings.Contains(c, "by rule 1") || !strings.HasSuffix(c, ": "+c0(t, tt.spec)) {
					t.Errorf("comment %q", c)
				}
			}
		})
	}
}

// TestTrackingOnDemand checks that connection state is kept only while a
// rule needs it and only for the connections in such a rule's scope.
func TestTrackingOnDemand(t *testing.T) {
	c := NewController(faketime.NewManualClock(), 1)
	replay := func() {
		for _, s := range conversation {
			c.Decide(parsed(t, s.dir, s.b))
		}
	}
	c.AddString("drop port=81 match=syn,data")
	c.AddString("duplicate 50% dir=out flags=fin")
	replay()
	if n := c.TrackedConns(); n != 0 {
		t.Fatalf("stateless rules track %d connections", n)
	}
	id, _ := c.AddString("drop port=81 match=retransmission")
	replay()
	if n := c.TrackedConns(); n != 0 {
		t.Fatalf("a rule for port 81 tracks %d connections of port 80", n)
	}
	c.AddString("drop flow=198.18.0.1:40000 match=keepalive-probe")
	replay()
	if n := c.TrackedConns(); n != 1 {
		t.Fatalf("tracked connections %d, want 1", n)
	}
	c.Remove(id)
	if n := c.TrackedConns(); n != 1 {
		t.Fatalf("tracked connections %d after removing another rule, want 1", n)
	}
	c.Clear()
	if n := c.TrackedConns(); n != 0 {
		t.Fatalf("tracked connections %d with no rules, want 0", n)
	}
}

// TestFlowsExisting: connections open when the rule starts (seen first
// mid-stream) are existing; those whose SYN comes later are new.
func TestFlowsExisting(t *testing.T) {
	clock := faketime.NewManualClock()
	c := NewController(clock, 1)
	oldData := seg{app4, peer4, 40001, 80, packet.FlagACK | packet.FlagPSH, 77, 88, 500, 10}.build()
	c.AddString("drop flows=existing")
	c.AddString("reject flows=new after=1s")
	if d := c.Decide(parsed(t, packet.In, oldData)); d.Rule != 1 {
		t.Fatalf("old connection: %+v, want rule 1", d)
	}
	if d := c.Decide(parsed(t, packet.In, conversation[0].b)); d != (Decision{}) {
		t.Fatalf("SYN of a new connection before rule 2 starts: %+v", d)
	}
	clock.Advance(time.Second)
	// The connection opened before rule 2 started: existing for it too.
	if d := c.Decide(parsed(t, packet.In, conversation[3].b)); d != (Decision{}) {
		t.Fatalf("connection opened before rule 2 started: %+v", d)
	}
	syn := seg{app4, peer4, 40002, 80, packet.FlagSYN, 1, 0, 500, 0}.build()
	if d := c.Decide(parsed(t, packet.In, syn)); d.Rule != 2 || d.Action != ActReject {
		t.Fatalf("new connection: %+v, want reject by rule 2", d)
	}
}

// TestConnN: conn=N picks the Nth connection opened in the rule's scope
// after it started; SYN retransmissions do not count.
func TestConnN(t *testing.T) {
	c := NewController(faketime.NewManualClock(), 1)
	c.AddString("drop conn=2 port=80 dir=out")
	synOf := func(port uint16) *packet.Packet {
		return parsed(t, packet.In, seg{app4, peer4, port, 80, packet.FlagSYN, 1, 0, 500, 0}.build())
	}
	synackOf := func(port uint16) *packet.Packet {
		return parsed(t, packet.Out, seg{peer4, app4, 80, port, packet.FlagSYN | packet.FlagACK, 9, 2, 500, 0}.build())
	}
	c.Decide(synOf(1000))
	c.Decide(synOf(1000)) // retransmitted
	c.Decide(parsed(t, packet.In, seg{app4, peer4, 3000, 81, packet.FlagSYN, 1, 0, 500, 0}.build()))
	c.Decide(synOf(2000))
	c.Decide(synOf(3000))
	for port, want := range map[uint16]Verdict{1000: Pass, 2000: Dropped, 3000: Pass} {
		if d := c.Decide(synackOf(port)); d.Verdict != want {
			t.Errorf("SYN-ACK to port %d: %v, want %v", port, d.Verdict, want)
		}
	}
}

// TestRate checks the queue: packets leave one transmission time apart,
// and once queue bytes wait, more are tail-dropped.
func TestRate(t *testing.T) {
	clock := faketime.NewManualClock()
	c := NewController(clock, 1)
	c.AddString("rate 8000bit queue=2000") // 1000 bytes/s
	p := parsed(t, packet.In, in(packet.FlagACK|packet.FlagPSH, 1, 1, 500, 60))
	if p.Len != 100 {
		t.Fatalf("test packet is %d bytes", p.Len)
	}
	for i := range 20 {
		d := c.Decide(p)
		if want := time.Duration(i+1) * 100 * time.Millisecond; d.Verdict != Delayed || d.Delay != want {
			t.Fatalf("packet %d: %v %v, want delay %v", i, d.Verdict, d.Delay, want)
		}
	}
	if d := c.Decide(p); d.Verdict != Dropped {
		t.Fatalf("packet beyond the queue: %v, want tail drop", d.Verdict)
	}
	if c := c.Comment(Decision{Verdict: Dropped, Rule: 1, Action: ActRate}); !strings.HasPrefix(c, "tail-dropped by rule 1") {
		t.Errorf("comment %q", c)
	}
	// The other direction has a queue of its own.
	if d := c.Decide(parsed(t, packet.Out, out(packet.FlagACK, 1, 1, 500, 60))); d.Delay != 100*time.Millisecond {
		t.Fatalf("outbound: %+v", d)
	}
	clock.Advance(time.Second) // ten packets left
	if d := c.Decide(p); d.Verdict != Delayed || d.Delay != 1100*time.Millisecond {
		t.Fatalf("after 1s: %v %v, want 1.1s", d.Verdict, d.Delay)
	}
	st := c.Status()[0]
	if st.TailDropped != 1 || st.Dropped != 1 || st.Delayed != 22 {
		t.Errorf("status %+v", st)
	}
}

// TestBurstLoss checks the Gilbert–Elliott chain against its stationary
// loss rate and mean burst length, and that it depends on the seed only.
func TestBurstLoss(t *testing.T) {
	run := func(seed uint64) (pattern []bool) {
		c := NewController(faketime.NewManualClock(), seed)
		c.AddString("loss ge p=10% r=50%")
		p := parsed(t, packet.In, in(packet.FlagACK, 1, 1, 500, 10))
		for range 100000 {
			pattern = append(pattern, c.Decide(p).Verdict == Dropped)
		}
		return pattern
	}
	a, b, other := run(7), run(7), run(8)
	if !slices.Equal(a, b) || slices.Equal(a, other) {
		t.Fatal("the loss pattern must depend on the seed only")
	}
	var lost, bursts int
	for i, l := range a {
		if l {
			lost++
			if i == 0 || !a[i-1] {
				bursts++
			}
		}
	}
	// Bad a fraction p/(p+r) = 1/6 of the time, bursts of 1/r = 2 packets.
	ratio, mean := float64(lost)/float64(len(a)), float64(lost)/float64(bursts)
	if ratio < 0.15 || ratio > 0.185 || mean < 1.85 || mean > 2.15 {
		t.Fatalf("loss %.3f (want ≈0.167), mean burst %.2f (want ≈2)", ratio, mean)
	}
}

// TestProbabilisticActions checks that duplicate, reorder and corrupt fire
// in proportion.
func TestProbabilisticActions(t *testing.T) {
	for _, act := range []string{"duplicate", "reorder", "corrupt"} {
		c := NewController(faketime.NewManualClock(), 3)
		c.AddString(act + " 30%")
		p := parsed(t, packet.In, in(packet.FlagACK, 1, 1, 500, 10))
		n := 0
		for range 10000 {
			if c.Decide(p).Rule != 0 {
				n++
			}
		}
		if n < 2800 || n > 3200 {
			t.Errorf("%s 30%% fired %d of 10000 times", act, n)
		}
	}
}

func TestNthExpires(t *testing.T) {
	c := NewController(faketime.NewManualClock(), 1)
	c.AddString("drop nth=2")
	p := parsed(t, packet.In, in(packet.FlagACK, 1, 1, 500, 10))
	var got []Verdict
	for range 4 {
		got = append(got, c.Decide(p).Verdict)
	}
	if !slices.Equal(got, []Verdict{Pass, Dropped, Pass, Pass}) || c.Status()[0].State != "expired" {
		t.Fatalf("verdicts %v, state %s", got, c.Status()[0].State)
	}
}

// BenchmarkDecideNoMatchTCP measures the pass-through cost with ten
// new-style rules, stateful ones among them, that match nothing: it must
// not allocate or take a lock (no connection is in a stateful rule's scope).
func BenchmarkDecideNoMatchTCP(b *testing.B) {
	c := NewController(faketime.NewManualClock(), 1)
	specs := []string{
		"drop match=syn-ack port=%d", "reject match=data port=%d", "drop match=retransmission port=%d",
		"drop match=keepalive-probe port=%d", "rst-at-seq=1000 port=%d", "duplicate 10%% port=%d",
		"corrupt 1%% match=data port=%d", "drop after=established until=rto:3 port=%d",
		"loss ge p=1%% r=30%% port=%d", "rate 1mbit after-bytes=1MB port=%d",
	}
	for i, s := range specs {
		if _, err := c.AddString(fmt.Sprintf(s, 1000+i)); err != nil {
			b.Fatal(err)
		}
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
	if c.TrackedConns() != 0 {
		b.Fatal("a connection out of every rule's scope was tracked")
	}
}

// c0 returns the canonical form of spec.
func c0(t *testing.T, spec string) string {
	sp, err := ParseSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	return sp.String()
}
