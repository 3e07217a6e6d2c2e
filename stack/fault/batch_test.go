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
func TestDeliverBatch(t *testing.T) {
	const n = 6
	for _, tc := range []struct {
		rule        string
		want, later []string
		whole       bool
	}{
		{rule: "", want: []string{"merge 0+6"}, whole: true},
		{rule: "drop nth=3 dir=in", want: []string{"merge 0+2", "merge 3+3"}},
		{rule: "drop nth=1 dir=in", want: []string{"merge 1+5"}},
		{rule: "drop every=2 dir=in", want: []string{"seg 0", "seg 2", "seg 4"}},
		{rule: "delay 1ms nth=2 dir=in", want: []string{"seg 0", "merge 2+4"}, later: []string{"seg 1"}},
		{rule: "drop dir=in", want: nil},
	} {
		t.Run(tc.rule, func(t *testing.T) {
			var specs []string
			if tc.rule != "" {
				specs = append(specs, tc.rule)
			}
			l := newLayer(t, specs...)
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
			l.ep.DeliverBatch(&Batch{Proto: header.IPv4ProtocolNumber, Segments: segs, Merge: merge})
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
			l.clock.Advance(time.Millisecond)
			if g := got()[len(tc.want):]; !slices.Equal(g, tc.later) {
				t.Errorf("later %q, want %q", g, tc.later)
			}
		})
	}
}
