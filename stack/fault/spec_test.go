package fault

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/internal/packet"
)

// fuzzSpecSeeds cover every action and key of the grammar, valid and not;
// testdata/fuzz/FuzzParseSpec holds more.
var fuzzSpecSeeds = []string{
	"drop", "loss 20% dir=out", "delay 150ms jitter=5ms", "drop flags=syn,data port=80 after=1s for=2s count=3", "drop dir=", "loss %",
	"reject match=data port=80", "rst-at-seq=1MB dir=out", "duplicate 5%", "reorder 10% gap=3", "corrupt 1% match=data",
	"rate 1mbit queue=64KiB", "rate 125000", "loss ge p=1% r=30% h=0.1 k=99.9%", "loss ge p=0.5",
	"drop match=syn-ack,handshake-ack,pure-ack,window-update", "drop match=retransmission,keepalive-probe,zero-window-probe",
	"drop flow=[fd00:198:18::1]:40000 conn=2 flows=existing after-bytes=1000000 nth=3",
	"drop every=2 after=established until=rto:3", "drop after=bytes:1MB for=rtos:2", "drop for=1s until=rto:1",
	"rst-at-seq=0", "loss ge", "reorder gap=0", "rate 0bit", "drop nth=1 every=2", "drop flows=old",
}

func TestParseSpecTCP(t *testing.T) {
	tests := []struct {
		in   string
		want Spec
	}{
		{"reject", Spec{Action: ActReject, Dir: packet.Both}},
		{"reject dir=in match=data", Spec{Action: ActReject, Dir: packet.In, Match: MatchData}},
		{"rst-at-seq=1000", Spec{Action: ActRSTAtSeq, Seq: 1000, Dir: packet.Both}},
		{"rst-at-seq=1MB dir=out", Spec{Action: ActRSTAtSeq, Seq: 1000000, Dir: packet.Out}},
		{"duplicate", Spec{Action: ActDuplicate, Prob: 1, Dir: packet.Both}},
		{"duplicate 5%", Spec{Action: ActDuplicate, Prob: 0.05, Dir: packet.Both}},
		{"reorder 10% gap=3", Spec{Action: ActReorder, Prob: 0.1, Gap: 3, Dir: packet.Both}},
		{"corrupt 0.5% dir=out", Spec{Action: ActCorrupt, Prob: 0.005, Dir: packet.Out}},
		{"rate 1mbit", Spec{Action: ActRate, Rate: 1e6, Dir: packet.Both}},
		{"rate 1.5mbit queue=64KiB", Spec{Action: ActRate, Rate: 1.5e6, Queue: 65536, Dir: packet.Both}},
		{"rate 125000", Spec{Action: ActRate, Rate: 1e6, Dir: packet.Both}},
		{"loss ge p=1% r=30%", Spec{Action: ActBurstLoss, GE: GilbertElliott{P: 0.01, R: 0.3, H: 0, K: 1}, Dir: packet.Both}},
		{"loss ge p=0.1", Spec{Action: ActBurstLoss, GE: GilbertElliott{P: 0.1, R: 0.9, H: 0, K: 1}, Dir: packet.Both}},
		{"loss ge k=99% h=10% r=0.5 p=2%", Spec{Action: ActBurstLoss, GE: GilbertElliott{P: 0.02, R: 0.5, H: 0.1, K: 0.99}, Dir: packet.Both}},
		{"drop match=syn,syn-ack,handshake-ack", Spec{Action: ActDrop, Dir: packet.Both, Match: MatchSYN | MatchSYNACK | MatchHandshakeAck}},
		{"drop match=data,pure-ack,fin,rst", Spec{Action: ActDrop, Dir: packet.Both, Match: MatchData | MatchPureAck | MatchFIN | MatchRST}},
		{"drop match=retransmission,keepalive-probe,zero-window-probe,window-update", Spec{Action: ActDrop, Dir: packet.Both,
			Match: MatchRetransmission | MatchKeepaliveProbe | MatchZeroWindowProbe | MatchWindowUpdate}},
		{"drop flow=198.18.0.1:40000", Spec{Action: ActDrop, Dir: packet.Both, Flow: netip.MustParseAddrPort("198.18.0.1:40000")}},
		{"drop flow=[fd00:198:18::1]:40000", Spec{Action: ActDrop, Dir: packet.Both, Flow: netip.MustParseAddrPort("[fd00:198:18::1]:40000")}},
		{"drop flow=[::ffff:198.18.0.1]:1", Spec{Action: ActDrop, Dir: packet.Both, Flow: netip.MustParseAddrPort("198.18.0.1:1")}},
		{"drop conn=2 flows=new", Spec{Action: ActDrop, Dir: packet.Both, Conn: 2, Flows: FlowsNew}},
		{"drop flows=existing", Spec{Action: ActDrop, Dir: packet.Both, Flows: FlowsExisting}},
		{"drop after-bytes=1MB dir=out", Spec{Action: ActDrop, Dir: packet.Out, AfterBytes: 1e6}},
		{"drop after-bytes=2KiB", Spec{Action: ActDrop, Dir: packet.Both, AfterBytes: 2048}},
		{"drop nth=3", Spec{Action: ActDrop, Dir: packet.Both, Nth: 3}},
		{"drop every=10", Spec{Action: ActDrop, Dir: packet.Both, Every: 10}},
		{"drop after=established", Spec{Action: ActDrop, Dir: packet.Both, AfterEstablished: true}},
		{"drop after=bytes:500", Spec{Action: ActDrop, Dir: packet.Both, AfterFlowBytes: 500}},
		{"drop until=rto:3", Spec{Action: ActDrop, Dir: packet.Both, UntilRTO: 3}},
		{"drop for=rtos:2", Spec{Action: ActDrop, Dir: packet.Both, UntilRTO: 2}},
		{"drop for=2s until=rto:1 count=4", Spec{Action: ActDrop, Dir: packet.Both, For: 2 * time.Second, UntilRTO: 1, Count: 4}},
		{"delay 10ms match=syn-ack after=1s", Spec{Action: ActDelay, Delay: 10 * time.Millisecond, Dir: packet.Both, Match: MatchSYNACK, After: time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSpec(tt.in)
			if err != nil {
				t.Fatalf("ParseSpec(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseSpec(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			again, err := ParseSpec(got.String())
			if err != nil || again != got {
				t.Fatalf("round trip via %q: %+v, %v", got.String(), again, err)
			}
		})
	}
}

func TestSpecStringCanonical(t *testing.T) {
	tests := []struct{ in, want string }{
		{"rate 125000", "rate 1mbit"},
		{"rate 1500kbit", "rate 1500kbit"},
		{"rate 3bit", "rate 3bit"},
		{"rst-at-seq=1KiB", "rst-at-seq=1024"},
		{"loss ge p=1%", "loss ge p=1% r=99% h=0% k=100%"},
		{"duplicate", "duplicate 100%"},
		{"drop for=rtos:3 match=fin,syn", "drop match=syn,fin until=rto:3"},
		{"corrupt 1% count=2 nth=4 port=80 dir=in", "corrupt 1% dir=in port=80 nth=4 count=2"},
	}
	for _, tt := range tests {
		sp, err := ParseSpec(tt.in)
		if err != nil {
			t.Fatalf("ParseSpec(%q): %v", tt.in, err)
		}
		if got := sp.String(); got != tt.want {
			t.Errorf("ParseSpec(%q).String() = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseSpec(t *testing.T) {
	tests := []struct {
		in   string
		want Spec
	}{
		{"drop", Spec{Action: ActDrop, Dir: packet.Both}},
		{"drop dir=in for=3s", Spec{Action: ActDrop, Dir: packet.In, For: 3 * time.Second}},
		{"loss 20% dir=out", Spec{Action: ActLoss, Loss: 0.2, Dir: packet.Out}},
		{"loss 0.5%", Spec{Action: ActLoss, Loss: 0.005, Dir: packet.Both}},
		{"delay 150ms", Spec{Action: ActDelay, Delay: 150 * time.Millisecond, Dir: packet.Both}},
		{"delay 150ms jitter=20ms port=80", Spec{Action: ActDelay, Delay: 150 * time.Millisecond, Jitter: 20 * time.Millisecond, Port: 80, Dir: packet.Both}},
		{"drop flags=syn,fin after=2s count=3", Spec{Action: ActDrop, Dir: packet.Both, Flags: ClassSYN | ClassFIN, After: 2 * time.Second, Count: 3}},
		{"  drop   dir=both  flags=ack-only ", Spec{Action: ActDrop, Dir: packet.Both, Flags: ClassAckOnly}},
		{"drop flags=data dir=out", Spec{Action: ActDrop, Dir: packet.Out, Flags: ClassData}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSpec(tt.in)
			if err != nil {
				t.Fatalf("ParseSpec(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseSpec(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			again, err := ParseSpec(got.String())
			if err != nil || again != got {
				t.Fatalf("round trip via %q: %+v, %v", got.String(), again, err)
			}
		})
	}
}

func TestParseSpecErrors(t *testing.T) {
	tests := []struct {
		in, token string
	}{
		{"", ""},
		{"explode", "explode"},
		{"loss", "loss"},
		{"loss 20", "20"},
		{"loss 120%", "120%"},
		{"loss 0%", "0%"},
		{"loss x%", "x%"},
		{"delay", "delay"},
		{"delay fast", "fast"},
		{"delay -1s", "-1s"},
		{"delay dir=in", "delay"},
		{"drop dir=sideways", "dir=sideways"},
		{"drop port=0", "port=0"},
		{"drop port=70000", "port=70000"},
		{"drop flags=urg", "flags=urg"},
		{"drop for=0s", "for=0s"},
		{"drop after=soon", "after=soon"},
		{"drop count=-1", "count=-1"},
		{"drop jitter=5ms", "jitter=5ms"},
		{"drop dir=in dir=out", "dir=out"},
		{"drop bogus", "bogus"},
		{"drop color=red", "color=red"},
		{"drop port=", "port="},
		// The TCP-aware rules and their options.
		{"rst-at-seq", "rst-at-seq"},
		{"rst-at-seq=0", "rst-at-seq=0"},
		{"rst-at-seq=5000000000", "rst-at-seq=5000000000"},
		{"drop=1", "drop=1"},
		{"duplicate 0%", "0%"},
		{"corrupt 1.5", "1.5"},
		{"reorder 10% gap=0", "gap=0"},
		{"reorder gap=1001", "gap=1001"},
		{"drop gap=2", "gap=2"},
		{"rate", "rate"},
		{"rate fast", "fast"},
		{"rate 0.5bit", "0.5bit"},
		{"rate 1mbit queue=0", "queue=0"},
		{"drop queue=10", "queue=10"},
		{"loss ge", "ge"},
		{"loss ge r=10%", "ge"},
		{"loss ge p=0%", "p=0%"},
		{"loss ge p=120%", "p=120%"},
		{"loss ge p=1% k=2", "k=2"},
		{"drop p=1%", "p=1%"},
		{"drop match=ack", "match=ack"},
		{"drop match=", "match="},
		{"drop flow=198.18.0.1", "flow=198.18.0.1"},
		{"drop flow=198.18.0.1:0", "flow=198.18.0.1:0"},
		{"drop conn=0", "conn=0"},
		{"drop flows=old", "flows=old"},
		{"drop after-bytes=0", "after-bytes=0"},
		{"drop after-bytes=-1", "after-bytes=-1"},
		{"drop nth=x", "nth=x"},
		{"drop nth=1 every=2", "every=2"},
		{"drop after=bytes:0", "after=bytes:0"},
		{"drop after=handshake", "after=handshake"},
		{"drop until=3", "until=3"},
		{"drop until=rto:0", "until=rto:0"},
		{"drop for=rtos:x", "for=rtos:x"},
		{"drop for=rtos:2 until=rto:3", "until=rto:3"},
		{"drop after=1s after=established", "after=established"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseSpec(tt.in)
			var se *SpecError
			if !errors.As(err, &se) {
				t.Fatalf("ParseSpec(%q) error = %v, want *SpecError", tt.in, err)
			}
			if se.Token != tt.token {
				t.Errorf("bad token = %q, want %q (%v)", se.Token, tt.token, err)
			}
			if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, tt.token) {
				t.Errorf("error %q must be one line naming %q", msg, tt.token)
			}
		})
	}
}

func FuzzParseSpec(f *testing.F) {
	for _, s := range fuzzSpecSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sp, err := ParseSpec(s)
		if err != nil {
			if strings.Contains(err.Error(), "\n") && !strings.Contains(s, "\n") {
				t.Fatalf("multi-line error for %q: %v", s, err)
			}
			return
		}
		again, err := ParseSpec(sp.String())
		if err != nil || again != sp {
			t.Fatalf("%q parsed to %+v, whose String %q reparses to %+v, %v", s, sp, sp.String(), again, err)
		}
	})
}
