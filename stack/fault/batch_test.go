package fault

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/unplug-dev/unplug/internal/packet"
)

// TestDeliverBatch judges the six segments of a super-packet with rules
// that spare, drop or delay some of them, and checks what goes up: the
// whole super-packet when all passed, runs of consecutive survivors merged,
// lone survivors as they are, and delayed segments later on their own.
// Each case runs with the segments built (Segments) and in header form
// (Heads, segments built on demand), observed and not: the results and
// counters must be the same, and without an observer the header form
// builds no segment when all of them pass.
func TestDeliverBatch(t *testing.T) {
	const n = 6
	for _, tc := range []struct {
		rule        string
		want, later []string
		whole       bool
	}{
		{rule: "", want: []string{"merge 0+6"}, whole: true},
		{rule: "drop port=81", want: []string{"merge 0+6"}, whole: true}, // not the batch's connection
		{rule: "drop dir=out", want: []string{"merge 0+6"}, whole: true},
		{rule: "drop nth=3 dir=in", want: []string{"merge 0+2", "merge 3+3"}},
		{rule: "drop nth=1 dir=in", want: []string{"merge 1+5"}},
		{rule: "drop every=2 dir=in", want: []string{"seg 0", "seg 2", "seg 4"}},
		{rule: "delay 1ms nth=2 dir=in", want: []string{"seg 0", "merge 2+4"}, later: []string{"seg 1"}},
		{rule: "drop dir=in", want: nil},
	} {
		for _, form := range []string{"segments", "heads", "heads unobserved"} {
			t.Run(tc.rule+"/"+form, func(t *testing.T) {
				var specs []string
				if tc.rule != "" {
					specs = append(specs, tc.rule)
				}
				l := newLayerObserved(t, form != "heads unobserved", specs...)
				segs := make([]*stack.PacketBuffer, n)
				names := map[string]string{}
				for i := range segs {
					b := in(packet.FlagACK, uint32(1+i*100), 1, 1000, 100)
					names[string(b)] = fmt.Sprintf("seg %d", i)
					segs[i] = stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
				}
				merge := func(first, count int) *stack.PacketBuffer {
					m := []byte(fmt.Sprintf("merge %d+%d", first, count))
					names[string(m)] = string(m)
					return stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(m)})
				}
				batch := &Batch{Proto: header.IPv4ProtocolNumber, Segments: segs, Merge: merge}
				built := 0
				if form != "segments" {
					batch.Segments = nil
					for _, seg := range segs {
						v := seg.ToView()
						b := slices.Clone(v.AsSlice())
						v.Release()
						batch.Heads = append(batch.Heads, b[:header.IPv4MinimumSize+header.TCPMinimumSize])
						batch.Lens = append(batch.Lens, len(b))
					}
					batch.Segment = func(i int) *stack.PacketBuffer { built++; return segs[i] }
				}
				l.ep.DeliverBatch(batch)
				for _, s := range segs {
					s.DecRef()
				}
				got := func() []string {
					var out []string
					for _, p := range l.up.packets() {
						out = append(out, names[string(p)])
					}
					return out
				}
				if g := got(); !slices.Equal(g, tc.want) {
					t.Errorf("went up %q, want %q", g, tc.want)
				}
				st := l.ep.Stats()
				if whole := st.Whole.Load() == 1; whole != tc.whole || st.Whole.Load()+st.Merged.Load() != 1 {
					t.Errorf("whole %d, merged %d; want whole: %v", st.Whole.Load(), st.Merged.Load(), tc.whole)
				}
				switch {
				case form == "heads" && built != n:
					t.Errorf("built %d segments for the observer, want %d", built, n)
				case form == "heads unobserved" && tc.whole && built != 0:
					t.Errorf("built %d segments, want none when all pass", built)
				case form == "heads unobserved" && !tc.whole && built != n:
					t.Errorf("built %d segments, want all %d when not all pass", built, n)
				}
				if st.In.Load() != n {
					t.Errorf("counted %d in, want %d", st.In.Load(), n)
				}
				l.clock.Advance(time.Millisecond)
				if g := got()[len(tc.want):]; !slices.Equal(g, tc.later) {
					t.Errorf("later %q, want %q", g, tc.later)
				}
			})
		}
	}
}

// BenchmarkJudgeBatch measures judging one 64 KiB super-packet's 45
// segments in header form, with no rules, with ten rules for other
// connections (judged once for the batch: Controller.Concerns) and with
// ten rules on its port that act on none of its segments (judged segment
// by segment).
func BenchmarkJudgeBatch(b *testing.B) {
	const n = 45
	other, own := make([]string, 10), make([]string, 10)
	for i := range other {
		other[i] = fmt.Sprintf("drop port=%d", 61001+i)
		own[i] = fmt.Sprintf("drop flags=syn port=80 after=%dms", i)
	}
	var heads [][]byte
	var lens []int
	for i := range n {
		s := in(packet.FlagACK, uint32(1+i*1448), 1, 1000, 0)
		heads, lens = append(heads, s), append(lens, len(s)+1448)
	}
	for _, bc := range []struct {
		name  string
		rules []string
	}{{"none", nil}, {"other-connections", other}, {"own-port", own}} {
		b.Run(bc.name, func(b *testing.B) {
			l := newLayerObserved(b, false, bc.rules...)
			l.clock.Advance(time.Second)
			verdicts := make([]Decision, n)
			form := HeaderForm{Heads: heads, Lens: lens}
			for b.Loop() {
				if !l.ep.judgeForm(packet.In, &form, verdicts) {
					b.Fatal("a segment did not pass")
				}
			}
		})
	}
}
