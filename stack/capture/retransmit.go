package capture

import (
	"net/netip"

	"github.com/unplug-dev/unplug/stack/fault"
)

// Kind is what a TCP segment is relative to what its flow sent before.
type Kind uint8

// Kinds of segment, as told by RetransmitTracker.Classify.
const (
	// KindOther is anything the tracker does not follow: not TCP,
	// unparseable, or an IP fragment without a TCP header.
	KindOther Kind = iota
	// KindNew is a segment carrying no sequence space sent before: new data,
	// a pure ACK, a RST, or the first segment seen of a flow.
	KindNew
	// KindRetransmit is a segment carrying sequence space the flow already
	// sent: data starting below the highest sequence end seen, or a SYN or
	// FIN sent again.
	KindRetransmit
	// KindKeepaliveProbe is an ACK-only segment with 0 or 1 byte at the
	// highest sequence end minus one (RFC 1122 4.2.3.6): a keepalive, or a
	// zero-window probe sent before any zero window was seen.
	KindKeepaliveProbe
	// KindZeroWindowProbe is a probe shaped like KindKeepaliveProbe sent
	// while the other direction's last advertised window was zero.
	KindZeroWindowProbe
)

// String returns "other", "new", "retransmit", "keepalive-probe" or
// "zero-window-probe".
func (k Kind) String() string {
	switch k {
	case KindNew:
		return "new"
	case KindRetransmit:
		return "retransmit"
	case KindKeepaliveProbe:
		return "keepalive-probe"
	case KindZeroWindowProbe:
		return "zero-window-probe"
	}
	return "other"
}

// flowKey identifies one direction of a TCP connection.
type flowKey struct {
	src, dst     netip.Addr
	sport, dport uint16
	dir          fault.Direction
}

func keyOf(p *fault.Packet) flowKey {
	return flowKey{src: p.Src, dst: p.Dst, sport: p.SrcPort, dport: p.DstPort, dir: p.Dir}
}

// reverse returns the key of the opposite direction of the same connection.
func (k flowKey) reverse() flowKey {
	dir := k.dir
	switch dir {
	case fault.In:
		dir = fault.Out
	case fault.Out:
		dir = fault.In
	}
	return flowKey{src: k.dst, dst: k.src, sport: k.dport, dport: k.sport, dir: dir}
}

// flowState is what one direction of a connection has sent so far.
type flowState struct {
	end    uint32 // highest sequence end (seq + data + SYN + FIN) seen
	syn    uint32 // sequence number of the SYN, when hasSYN
	hasSYN bool
	win    uint16 // last advertised window (unscaled)
}

// seqBefore reports a < b in sequence-number (serial) arithmetic, RFC 1982.
func seqBefore(a, b uint32) bool { return int32(a-b) < 0 }

// RetransmitTracker tells retransmitted TCP segments from new ones, per flow
// (4-tuple and direction), from the segments it is shown in order. It keeps
// per-flow state for at most DefaultMaxFlows flows, forgetting the least
// recently active. It is used by Logger and by scenario reports.
//
// A RetransmitTracker is not safe for concurrent use.
type RetransmitTracker struct {
	flows flowTable[flowKey, flowState]
}

// NewRetransmitTracker returns an empty tracker.
func NewRetransmitTracker() *RetransmitTracker { return newRetransmitTracker(DefaultMaxFlows) }

func newRetransmitTracker(limit int) *RetransmitTracker {
	return &RetransmitTracker{flows: newFlowTable[flowKey, flowState](limit)}
}

// Check records p and reports whether it is a retransmission
// (KindRetransmit). Probes are not retransmissions. Show each packet once,
// to either Check or Classify.
func (t *RetransmitTracker) Check(p *fault.Packet) bool {
	return t.Classify(p) == KindRetransmit
}

const probeMask = fault.FlagSYN | fault.FlagFIN | fault.FlagRST | fault.FlagPSH | fault.FlagURG | fault.FlagACK

// Classify records p and returns its kind. The first segment seen of a flow
// is KindNew, since nothing is known of what came before it. Sequence
// numbers compare in serial arithmetic, so flows crossing 2^32 work. Show each
// packet once, to either Check or Classify.
func (t *RetransmitTracker) Classify(p *fault.Packet) Kind {
	if p == nil || p.Version == 0 || p.Proto != fault.ProtoTCP || (p.SrcPort == 0 && p.DstPort == 0) {
		return KindOther
	}
	segLen := uint32(p.PayloadLen)
	syn := p.Flags&fault.FlagSYN != 0
	if syn {
		segLen++
	}
	if p.Flags&fault.FlagFIN != 0 {
		segLen++
	}
	end := p.Seq + segLen
	fresh := flowState{end: end, syn: p.Seq, hasSYN: syn, win: p.Window}

	k := keyOf(p)
	st, ok := t.flows.get(k)
	kind := KindNew
	switch {
	case p.Flags&fault.FlagRST != 0:
		// A RST consumes no sequence space and may come from a stack that
		// knows nothing of the connection: remember only its window.
		if ok {
			st.win = p.Window
			t.flows.put(k, st)
		}
		return KindNew
	case !ok:
		st = fresh
	case syn:
		if !st.hasSYN || st.syn != p.Seq {
			st = fresh // a new connection on the same 4-tuple
			break
		}
		kind = KindRetransmit
	case p.Flags&probeMask == fault.FlagACK && p.PayloadLen <= 1 && p.Seq == st.end-1:
		kind = KindKeepaliveProbe
		if rev, ok := t.flows.peek(k.reverse()); ok && rev.win == 0 {
			kind = KindZeroWindowProbe
		}
	case segLen == 0:
		// A pure ACK: never a retransmission. Its seq is the sender's
		// snd.nxt, which is ahead of end if we missed segments.
	case seqBefore(p.Seq, st.end):
		kind = KindRetransmit
	}
	if seqBefore(st.end, end) {
		st.end = end
	}
	st.win = p.Window
	t.flows.put(k, st)
	return kind
}
