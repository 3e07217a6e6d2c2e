package fault

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/unplug-dev/unplug/internal/packet"
)

// Super is a TCP super-packet the peer's netstack sent (host GSO), cut by
// the caller into the wire-sized segments a sender without offload would
// have sent, so that rules judge every segment on its own (WriteSuper).
type Super struct {
	// Packet is the super-packet itself, forwarded whole when every
	// segment passes. The caller keeps its reference.
	Packet *stack.PacketBuffer
	// HeaderForm gives the segments by their headers, lazily or not.
	HeaderForm
	// Segment returns segment i as a packet of its own, with one
	// reference the caller of Segment owns.
	Segment func(i int) *stack.PacketBuffer
}

// maxSuperSegments bounds the segments WriteSuper judges from their
// headers alone: a 64 KiB super-packet of 1 KiB segments.
const maxSuperSegments = 64

// WriteSuper judges every segment of s like WritePackets and writes the
// result: the super-packet whole when every segment passed (and nothing
// held back waits for it), so that it leaves in one piece; otherwise the
// segments one by one, each with its own fate. The segments are judged
// from their headers; they are built as packets only when one is needed:
// for an observer (which records every segment's bytes), or when not all
// of them pass.
func (e *Endpoint) WriteSuper(s *Super) tcpip.Error {
	n := s.count()
	if e.obs != nil || n > maxSuperSegments {
		return e.writeSegments(s, nil)
	}
	e.stats.Out.Add(uint64(n))
	var verdicts [maxSuperSegments]Decision
	plain := e.judgeForm(packet.Out, &s.HeaderForm, verdicts[:n])
	if plain && e.held.Load() == 0 {
		e.passed[1].Add(uint64(n))
		var l stack.PacketBufferList
		l.PushBack(s.Packet)
		_, err := e.Endpoint.WritePackets(l)
		return err
	}
	return e.writeSegments(s, verdicts[:n])
}

// writeSegments builds every segment of s and writes them through the
// ordinary path with the verdicts given (nil: decided there, counted as
// seen there).
func (e *Endpoint) writeSegments(s *Super, verdicts []Decision) tcpip.Error {
	if s.lazy() {
		s.Cut()
	}
	segs := make([]*stack.PacketBuffer, len(s.Heads))
	for i := range segs {
		segs[i] = s.Segment(i)
	}
	var err tcpip.Error
	if verdicts == nil {
		var l stack.PacketBufferList
		for _, p := range segs {
			l.PushBack(p)
		}
		_, err = e.WritePackets(l)
	} else {
		_, err = e.writeDecided(segs, verdicts)
	}
	for _, p := range segs {
		p.DecRef()
	}
	return err
}
