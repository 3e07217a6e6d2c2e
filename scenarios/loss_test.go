package scenarios

import (
	"slices"
	"strings"
	"testing"
)

// TestLossRowsCanFail takes a real (virtual-clock) loss run, breaks one
// mechanism at a time, and requires the matching row to turn FAIL.
func TestLossRowsCanFail(t *testing.T) {
	base := runVirtual(t, "loss", nil, Options{Seed: 1})
	if base.Verdict != VerdictPass {
		var b strings.Builder
		base.WriteTable(&b)
		t.Fatalf("the unbroken run does not pass:\n%s", b.String())
	}
	sc, _ := Lookup("loss")
	p := DefaultParams(sc)
	// clone copies what the mutations touch.
	clone := func() *Report {
		r := *base
		r.Timeline = slices.Clone(base.Timeline)
		r.Measurements = slices.Clone(base.Measurements)
		r.Retransmissions = slices.Clone(base.Retransmissions)
		return &r
	}
	setMeasure := func(r *Report, name string, f func(float64) float64) {
		for i := range r.Measurements {
			if r.Measurements[i].Name == name {
				r.Measurements[i].Value = f(r.Measurements[i].Value)
			}
		}
	}
	for _, tc := range []struct {
		name, row string
		kernel    bool
		breakIt   func(r *Report)
	}{
		{"a byte missing", "bytes received", false, func(r *Report) {
			setMeasure(r, "bytes received", func(v float64) float64 { return v - 1 })
		}},
		{"twice the loss asked for", "client packets lost (z-score)", false, func(r *Report) {
			r.Packets.DroppedIn = 2*r.Packets.DroppedIn + 10
		}},
		{"no loss of the peer's packets", "peer packets lost (z-score)", false, func(r *Report) {
			r.Packets.DroppedOut = 0
		}},
		{"a lost segment never resent", "lost client segments never resent", false, func(r *Report) {
			// Remove every passing copy of the first lost data segment.
			var lost *Packet
			for _, ev := range r.Timeline {
				if pk := ev.Packet; pk != nil && pk.Dir == "in" && pk.Len > 0 && pk.Verdict == "drop" {
					lost = pk
					break
				}
			}
			if lost == nil {
				t.Fatal("the run lost no client data segment")
			}
			r.Timeline = slices.DeleteFunc(r.Timeline, func(ev Event) bool {
				pk := ev.Packet
				return pk != nil && pk.Dir == "in" && pk.Conn == lost.Conn && pk.Verdict == "pass" && seqCovers(pk.Seq, pk.Len, lost.Seq)
			})
		}},
		{"a stalled sender", "completion time over its RTO bound", false, func(r *Report) {
			setMeasure(r, "completion time", func(v float64) float64 { return v * 100 })
		}},
		{"gVisor's spurious retransmissions judged as Linux's", "client data retransmissions", true, func(r *Report) {}},
		{"no retransmissions at all", "client data retransmissions", false, func(r *Report) {
			r.Retransmissions = nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := clone()
			tc.breakIt(r)
			expectLoss(p, tc.kernel).evaluate(r)
			e, ok := r.Expectation(tc.row)
			if !ok {
				t.Fatalf("no row %q", tc.row)
			}
			if e.Pass || r.Verdict != VerdictFail {
				t.Errorf("row %q: measured %s against %s: still %v (verdict %s)", tc.row, e.Measured, e.Theory, e.Pass, r.Verdict)
			}
		})
	}
}
