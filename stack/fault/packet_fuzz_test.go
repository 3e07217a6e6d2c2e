package fault

import (
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/faketime"

	"github.com/unplug-dev/unplug/internal/flow"
	"github.com/unplug-dev/unplug/internal/packet"
)

// FuzzParse feeds the classifier arbitrary bytes (truncated IP headers, bad
// IHL and lengths, IPv6 extension header chains, fragments, non-TCP) and
// checks that nothing downstream of it panics or reads out of bounds: the
// controller with stateful rules, the flow tracker, the RST builders and
// the corrupter. Seeds are in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add(in(packet.FlagSYN, 1, 0, 100, 0), uint8(packet.In), uint16(0))
	f.Add(out(packet.FlagACK|packet.FlagPSH, 5, 9, 100, 30), uint8(packet.Out), uint16(10))
	f.Add(tcp6(80, 40000, packet.FlagACK, 100), uint8(packet.Out), uint16(0))
	f.Add([]byte{0x45, 0, 0, 20}, uint8(packet.In), uint16(0))
	f.Add([]byte{0x4f, 0, 0, 60, 0, 0, 0, 0, 64, 6}, uint8(packet.In), uint16(0))
	ctl := NewController(faketime.NewManualClock(), 1)
	for _, s := range []string{
		"drop match=retransmission,keepalive-probe,window-update,handshake-ack",
		"reject after-bytes=10 nth=5", "rst-at-seq=5 dir=out", "drop conn=1 until=rto:1", "drop flows=existing after=bytes:3",
	} {
		if _, err := ctl.AddString(s); err != nil {
			f.Fatal(err)
		}
	}
	tr := flow.NewTracker(16)
	f.Fuzz(func(t *testing.T, b []byte, dir uint8, cut uint16) {
		d := packet.Direction(dir%2 + 1)
		var p packet.Packet
		err := packet.Parse(d, b, &p)
		size := len(b) + int(cut)
		var q packet.Packet
		if packet.ParsePrefix(d, b, size, &q) == nil && q.PayloadLen < 0 {
			t.Fatalf("negative payload length %d", q.PayloadLen)
		}
		if err != nil {
			return
		}
		if p.Version != 4 && p.Version != 6 {
			t.Fatalf("parsed version %d", p.Version)
		}
		if p.PayloadLen < 0 || p.PayloadLen > p.Len {
			t.Fatalf("payload %d of a %d-byte packet", p.PayloadLen, p.Len)
		}
		if p.Proto != packet.ProtoTCP && p.Proto != packet.ProtoUDP && (p.SrcPort|p.DstPort) != 0 {
			t.Fatalf("ports %d, %d on protocol %d", p.SrcPort, p.DstPort, p.Proto)
		}
		Meaning(&p)
		ctl.Decide(&p)
		if p.IsTCP() {
			s := flow.SegmentOf(&p)
			tr.Track(&s, 1)
		}
		for _, build := range []func(*packet.Packet) []byte{resetReply, resetInPlace} {
			if rst := build(&p); rst != nil {
				var r packet.Packet
				if err := packet.Parse(packet.Both&^d, rst, &r); err != nil || r.Flags&packet.FlagRST == 0 {
					t.Fatalf("forged RST %x does not parse as one: %v", rst, err)
				}
			}
		}
		c := append([]byte(nil), b...)
		if corrupt(c, int(cut)) {
			diff := 0
			for i := range c {
				if c[i] != b[i] {
					diff++
				}
			}
			if diff != 1 {
				t.Fatalf("corrupt changed %d bytes, want 1", diff)
			}
		}
	})
}
