package fault

import (
	"github.com/unplug-dev/unplug/internal/packet"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Batch is one TCP super-packet from an offload device, cut by the link
// into the wire-sized segments a sender without offload would have sent,
// so that rules judge every segment on its own (DeliverBatch).
type Batch struct {
	// Proto is the segments' network protocol.
	Proto tcpip.NetworkProtocolNumber
	// Segments are the segments in order. The caller keeps its references
	// and must hold them until DeliverBatch returns: their identities tell
	// the segments that passed from other packets.
	//
	// A batch may come in header form instead (HeaderForm): Segments
	// nil, and Segment building the packets on demand. DeliverBatch then
	// judges the segments from their headers and builds them only when it
	// needs them (an observer records their bytes, or not all of them
	// pass), filling Segments.
	Segments []*stack.PacketBuffer
	HeaderForm
	// Segment returns segment i as a packet; the caller of DeliverBatch
	// keeps the reference and releases it with the others (header form
	// only).
	Segment func(i int) *stack.PacketBuffer
	// Merge returns one packet carrying count consecutive segments from
	// first on, as a receiver's GRO would have built it, with one
	// reference the caller of Merge owns; nil if it cannot. The run of all
	// segments is the super-packet itself.
	Merge func(first, count int) *stack.PacketBuffer
}

// HeaderForm gives a super-packet's segments by their headers: Heads and
// Lens, or lazily, with Heads nil until Cut fills them. The fault layer
// cuts only to judge the segments one by one: when a rule concerns the
// super-packet's connection (Controller.Concerns), or an observer records
// them. Otherwise they pass unjudged, counted, and the super-packet
// travels whole.
type HeaderForm struct {
	// Heads are the segments' IP and TCP headers, in order; Lens their
	// whole lengths.
	Heads [][]byte
	Lens  []int
	// Lazily: Head begins with the super-packet's IP and TCP headers, Len
	// is its whole length, and Count how many segments Cut cuts it into.
	Head  []byte
	Len   int
	Count int
	Cut   func()
}

// lazy reports whether h is still waiting for Cut.
func (h *HeaderForm) lazy() bool { return h.Heads == nil && h.Cut != nil }

// count returns how many segments h gives.
func (h *HeaderForm) count() int {
	if h.lazy() {
		return h.Count
	}
	return len(h.Heads)
}

// BatchDispatcher is implemented by dispatchers that take a super-packet's
// segments together (Endpoint). A link endpoint whose dispatcher has it
// hands over batches; any other dispatcher gets the segments one by one.
type BatchDispatcher interface {
	DeliverBatch(b *Batch)
}

var _ BatchDispatcher = (*Endpoint)(nil)

// DeliverBatch judges every segment of b like DeliverNetworkPacket and
// then sends up what passed: the super-packet whole when every segment
// passed, in order; otherwise each run of consecutive segments that passed
// merged into one packet, and everything else that went up meanwhile
// (duplicates, corrupted copies, forged resets, delayed packets the timer
// released during the batch) as it came, in order.
//
// Checksums: a merged packet carries RXChecksumValidated from the link
// (the kernel built its data) but checksums valid only for a segment, or
// the pseudo-header sum the kernel left. gVisor's NIC overwrites that mark
// on every packet from its endpoint's CapabilityRXChecksumOffload, so the
// Endpoint reports the capability exactly while it delivers a packet whose
// mark is set (deliveries up are serialized); every other packet is
// verified by gVisor as usual.
func (e *Endpoint) DeliverBatch(b *Batch) {
	var verdicts [maxSuperSegments]Decision
	decided := false
	if b.Segments == nil {
		n := b.count()
		if e.obs == nil && n <= maxSuperSegments {
			if e.deliverHeads(b, verdicts[:n]) {
				return
			}
			decided = true
		}
		b.Segments = make([]*stack.PacketBuffer, n)
		for i := range n {
			b.Segments[i] = b.Segment(i)
		}
	}
	e.up.Lock()
	e.batch = true
	e.up.Unlock()
	for i, pkt := range b.Segments {
		if decided {
			e.deliverDecided(b.Proto, pkt, verdicts[i])
		} else {
			e.DeliverNetworkPacket(b.Proto, pkt)
		}
	}
	e.up.Lock()
	defer e.up.Unlock()
	e.batch = false
	held := e.batchHeld
	defer func() {
		for i, h := range held {
			h.pkt.DecRef()
			held[i] = heldPacket{}
		}
		e.batchHeld = held[:0]
	}()
	if samePackets(held, b.Segments) {
		e.stats.Whole.Add(1)
		// The segments' references go first, so that the super-packet's
		// memory is no longer shared and gVisor parses it in place.
		for i, h := range held {
			h.pkt.DecRef()
			held[i] = heldPacket{}
		}
		held = held[:0]
		if whole := b.Merge(0, len(b.Segments)); whole != nil {
			e.deliverUpLocked(b.Proto, whole)
			whole.DecRef()
		}
		return
	}
	e.stats.Merged.Add(1)
	next := 0 // b.Segments[next:] may still be among held, in order
	for i := 0; i < len(held); {
		h := held[i]
		run, k := 1, indexFrom(b.Segments, next, h.pkt)
		if k >= 0 {
			for i+run < len(held) && k+run < len(b.Segments) && held[i+run].pkt == b.Segments[k+run] {
				run++
			}
			next = k + run
		}
		if run > 1 {
			if m := b.Merge(k, run); m != nil {
				e.deliverUpLocked(b.Proto, m)
				m.DecRef()
				i += run
				continue
			}
		}
		// Not mergeable: the packets go up one by one.
		for j := i; j < i+run; j++ {
			e.deliverUpLocked(held[j].proto, held[j].pkt)
		}
		i += run
	}
}

// deliverHeads judges the segments of a batch in header form from their
// headers into verdicts, as DeliverNetworkPacket would one by one. When
// every one passes and nothing is held back, it sends the super-packet up
// whole and returns true; otherwise the caller builds the segments and
// delivers them with these verdicts.
//
// A lazy batch is cut only if a rule concerns its connection.
func (e *Endpoint) deliverHeads(b *Batch, verdicts []Decision) bool {
	n := b.count()
	e.stats.In.Add(uint64(n))
	plain := e.judgeForm(packet.In, &b.HeaderForm, verdicts)
	if !plain || e.held.Load() != 0 {
		return false
	}
	e.passed[0].Add(uint64(n))
	e.up.Lock()
	defer e.up.Unlock()
	e.stats.Whole.Add(1)
	if whole := b.Merge(0, n); whole != nil {
		e.deliverUpLocked(b.Proto, whole)
		whole.DecRef()
	}
	return true
}

// judgeForm is judgeHeads for segments in header form, lazy or not. The
// segments are one connection's, travelling one way: when no rule
// concerns that connection (Controller.Concerns, asked once), every one
// passes unjudged and a lazy form stays uncut; otherwise a lazy form is
// cut and each segment judged.
func (e *Endpoint) judgeForm(dir packet.Direction, h *HeaderForm, verdicts []Decision) (plain bool) {
	head, length := h.Head, h.Len
	if !h.lazy() {
		if len(h.Heads) == 0 {
			return true
		}
		head, length = h.Heads[0], h.Lens[0]
	}
	if !e.concerned(dir, head, length) {
		clear(verdicts)
		return true
	}
	if h.lazy() {
		h.Cut()
	}
	return e.judgeHeads(dir, h.Heads, h.Lens, verdicts)
}

// heldPacket is a packet on its way up during a batch.
type heldPacket struct {
	proto tcpip.NetworkProtocolNumber
	pkt   *stack.PacketBuffer
}

// deliverUp hands pkt to the stack, or holds it (with a reference of its
// own) while a batch is being judged.
func (e *Endpoint) deliverUp(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	e.up.Lock()
	defer e.up.Unlock()
	if e.batch {
		e.batchHeld = append(e.batchHeld, heldPacket{proto, pkt.IncRef()})
		return
	}
	e.deliverUpLocked(proto, pkt)
}

// deliverUpLocked hands pkt to the stack with its checksum mark (see
// DeliverBatch).
func (e *Endpoint) deliverUpLocked(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	e.validated.Store(pkt.RXChecksumValidated)
	e.Endpoint.DeliverNetworkPacket(proto, pkt)
	e.validated.Store(false)
}

// Capabilities implements stack.LinkEndpoint: the wrapped endpoint's,
// with CapabilityRXChecksumOffload while a packet whose checksums the link
// checked goes up (see DeliverBatch).
func (e *Endpoint) Capabilities() stack.LinkEndpointCapabilities {
	c := e.Endpoint.Capabilities()
	if e.validated.Load() {
		c |= stack.CapabilityRXChecksumOffload
	}
	return c
}

// indexFrom returns the index of pkt in pkts[from:] (as an index of
// pkts), or -1.
func indexFrom(pkts []*stack.PacketBuffer, from int, pkt *stack.PacketBuffer) int {
	for k := from; k < len(pkts); k++ {
		if pkts[k] == pkt {
			return k
		}
	}
	return -1
}

// samePackets reports whether held are exactly pkts, in order. The link
// holds a reference to every segment until DeliverBatch returns, so a
// pointer cannot be reused within the batch.
func samePackets(held []heldPacket, pkts []*stack.PacketBuffer) bool {
	if len(held) != len(pkts) {
		return false
	}
	for i, h := range held {
		if h.pkt != pkts[i] {
			return false
		}
	}
	return true
}

// judgeHeads decides each segment given in header form (heads, with the
// whole lengths in lens) travelling dir into verdicts, counting them as
// one-by-one delivery would, and reports whether every one passed plainly
// (no drop, delay or duplicate): then the super-packet may travel whole.
func (e *Endpoint) judgeHeads(dir packet.Direction, heads [][]byte, lens []int, verdicts []Decision) (plain bool) {
	plain = true
	for i, h := range heads {
		var p packet.Packet
		if packet.ParsePrefix(dir, h, lens[i], &p) != nil {
			e.stats.Unparseable.Add(1)
		}
		d := e.ctl.Decide(&p)
		switch d.Verdict {
		case Dropped:
			e.stats.Dropped.Add(1)
		case Delayed:
			e.stats.Delayed.Add(1)
		}
		verdicts[i] = d
		plain = plain && d.Verdict == Pass && d.Action != ActDuplicate
	}
	return plain
}

// concerned reports whether a rule concerns the connection of the TCP
// segment or super-packet of length bytes whose headers begin head,
// travelling dir (Controller.Concerns); true when head does not parse, for
// the segments to be judged, and counted, one by one.
func (e *Endpoint) concerned(dir packet.Direction, head []byte, length int) bool {
	var p packet.Packet
	return packet.ParsePrefix(dir, head, length, &p) != nil || e.ctl.Concerns(&p)
}
