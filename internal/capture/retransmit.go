package capture

import (
	"github.com/unplug-dev/unplug/internal/flow"
	"github.com/unplug-dev/unplug/internal/packet"
)

// RetransmitTracker tells retransmitted TCP segments from new ones, per flow
// (4-tuple and direction), from the segments it is shown in order. It keeps
// per-connection state for at most DefaultMaxFlows connections, forgetting
// the least recently active. It is used by Logger and by scenario reports.
//
// A RetransmitTracker is not safe for concurrent use.
type RetransmitTracker struct {
	flows *flow.Tracker
}

// DefaultMaxFlows bounds the per-flow state kept by RetransmitTracker and
// Logger: beyond it, the least recently active flows are forgotten.
const DefaultMaxFlows = 65536

// NewRetransmitTracker returns an empty tracker.
func NewRetransmitTracker() *RetransmitTracker { return newRetransmitTracker(DefaultMaxFlows) }

func newRetransmitTracker(limit int) *RetransmitTracker {
	return &RetransmitTracker{flows: flow.NewTracker(limit)}
}

// Check records p and reports whether it is a retransmission
// (KindRetransmit). Probes are not retransmissions. Show each packet once,
// to either Check or Classify.
func (t *RetransmitTracker) Check(p *packet.Packet) bool {
	return t.Classify(p) == flow.KindRetransmit
}

// Classify records p and returns its kind. The first segment seen of a flow
// is KindNew, since nothing is known of what came before it. Sequence
// numbers compare in serial arithmetic, so flows crossing 2^32 work. Show each
// packet once, to either Check or Classify.
func (t *RetransmitTracker) Classify(p *packet.Packet) flow.Kind {
	if p == nil || p.Version == 0 || p.Proto != packet.ProtoTCP {
		return flow.KindOther
	}
	s := flow.SegmentOf(p)
	return t.flows.Classify(&s)
}
