package fault

import "github.com/unplug-dev/unplug/stack/fault/flow"

// Segment returns the part of p the flow tracker needs. It is meaningful for
// parsed TCP packets only (p.IsTCP()).
func (p *Packet) Segment() flow.Segment {
	return flow.Segment{
		Dir: p.Dir, Src: p.Src, Dst: p.Dst, SrcPort: p.SrcPort, DstPort: p.DstPort,
		Flags: p.Flags, Seq: p.Seq, Ack: p.Ack, Window: p.Window, Len: p.PayloadLen,
	}
}
