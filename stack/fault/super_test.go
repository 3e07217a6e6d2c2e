package fault

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/unplug-dev/unplug/internal/packet"
)

// TestWriteSuper: a super-packet whose segments all pass leaves whole;
// when a rule gives one segment another fate, or an observer records
// them, the segments leave one by one, each judged on its own.
func TestWriteSuper(t *testing.T) {
	segs := [][]byte{
		out(packet.FlagACK, 5001, 1101, 500, 10),
		out(packet.FlagACK, 5011, 1101, 500, 10),
		out(packet.FlagACK|packet.FlagPSH, 5021, 1101, 500, 10),
	}
	super := []byte("the super-packet stands for its segments")
	tests := []struct {
		name    string
		spec    string
		observe bool
		advance time.Duration
		want    [][]byte
	}{
		{"all pass", "", false, 0, [][]byte{super}},
		{"a rule that matches nothing", "drop port=9", false, 0, [][]byte{super}},
		{"one dropped", "drop nth=2", false, 0, [][]byte{segs[0], segs[2]}},
		{"all delayed", "delay 10ms", false, 10 * time.Millisecond, segs},
		{"observed", "", true, 0, segs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := channel.New(64, 1500, "")
			clock := &testClock{}
			ctl := NewController(clock, 1)
			if tt.spec != "" {
				if _, err := ctl.AddString(tt.spec); err != nil {
					t.Fatal(err)
				}
			}
			obs := &events{}
			var o Observer
			if tt.observe {
				o = obs
			}
			ep := NewEndpoint(dev, ctl, o)
			ep.Attach(&upper{})
			t.Cleanup(func() {
				ep.Close()
				for dev.Read() != nil {
				}
			})
			pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(slices.Clone(super))})
			pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
			defer pkt.DecRef()
			s := &Super{Packet: pkt, Segment: func(i int) *stack.PacketBuffer {
				p := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(slices.Clone(segs[i]))})
				p.NetworkProtocolNumber = header.IPv4ProtocolNumber
				return p
			}}
			for _, b := range segs {
				s.Heads = append(s.Heads, b[:40])
				s.Lens = append(s.Lens, len(b))
			}
			if err := ep.WriteSuper(s); err != nil {
				t.Fatal(err)
			}
			clock.Advance(tt.advance)
			var got [][]byte
			for p := dev.Read(); p != nil; p = dev.Read() {
				got = append(got, flatten(p, nil))
				p.DecRef()
			}
			if !slices.EqualFunc(got, tt.want, bytes.Equal) {
				t.Errorf("wrote %d packets %q, want %d", len(got), got, len(tt.want))
			}
			if n := ep.Stats().Out.Load(); n != uint64(len(segs)) {
				t.Errorf("counted %d packets out, want %d segments", n, len(segs))
			}
			if tt.observe && len(obs.verdicts()) != len(segs) {
				t.Errorf("observer saw %d events, want one per segment", len(obs.verdicts()))
			}
		})
	}
}
