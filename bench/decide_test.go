package bench

import (
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack/fault"
)

// BenchmarkDecideTenRules is the fault decision for one bulk segment with
// the bench's ten non-matching rules installed: the cost the bulk-rules row
// pays once per segment.
func BenchmarkDecideTenRules(b *testing.B) {
	ctl := fault.NewController(tcpip.NewStdClock(), 1)
	for _, spec := range nonMatchingRules {
		if _, err := ctl.AddString(spec); err != nil {
			b.Fatal(err)
		}
	}
	p := packet.Packet{
		Dir: packet.In, Version: 4, Proto: packet.ProtoTCP,
		Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2"),
		SrcPort: 40000, DstPort: 9, Flags: packet.FlagACK, PayloadLen: 1448, Len: 1500,
	}
	b.ReportAllocs()
	for b.Loop() {
		if d := ctl.Decide(&p); d.Verdict != fault.Pass {
			b.Fatalf("decision %v, want pass", d)
		}
	}
}
