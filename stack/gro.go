package stack

import (
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
)

// groEndpoint sits between the NIC and the fault layer of a peer on an
// offload device. The device link cuts each TCP super-packet the kernel
// sends into the MSS-sized segments a wire would carry, so that fault rules
// judge every segment on its own, and brackets them with begin and end.
// When every segment passed, in order, TCP receives the super-packet whole,
// as a Linux receiver's GRO would have built it; otherwise the segments
// that passed go through gVisor's generic receive offload, which merges
// what is still contiguous. Packets delivered outside a batch (delayed
// packets the fault layer releases later, ordinary packets) go up at once.
//
// Checksums: the link computes every segment's checksums (so captures show
// what a wire would carry) and marks them RXChecksumValidated; a merged or
// whole super-packet carries checksums valid only for a segment, or only
// the pseudo-header sum the kernel left. gVisor's NIC overwrites the mark
// on every packet from its endpoint's CapabilityRXChecksumOffload
// (stack/nic.go), so the endpoint reports that capability exactly while it
// delivers a packet whose mark is set: packets the link did not check are
// verified by gVisor as before.
type groEndpoint struct {
	nested.Endpoint

	mu    sync.Mutex // serializes the GRO engine and deliveries
	gro   gro.GRO
	batch bool
	held  []heldPacket // delivered during the batch, one reference each

	validated atomic.Bool // the packet being delivered up has checked checksums

	// Batches that went up whole, and those whose segments were merged
	// again because not all of them passed (tests read these).
	wholeBatches, mergedBatches atomic.Uint64
}

var _ gstack.LinkEndpoint = (*groEndpoint)(nil)
var _ gstack.NetworkDispatcher = (*groEndpoint)(nil)

// newGROEndpoint wraps lower (the fault layer).
func newGROEndpoint(lower gstack.LinkEndpoint) *groEndpoint {
	e := &groEndpoint{}
	e.gro.Init(true)
	e.gro.Dispatcher = groUp{e}
	e.Init(lower, e)
	return e
}

// DeliverNetworkPacket implements stack.NetworkDispatcher.
func (e *groEndpoint) DeliverNetworkPacket(protocol tcpip.NetworkProtocolNumber, pkt *gstack.PacketBuffer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.batch {
		e.deliverUpLocked(protocol, pkt)
		return
	}
	e.held = append(e.held, heldPacket{protocol, pkt.IncRef()})
}

// heldPacket is a packet that passed the fault layer during a batch.
type heldPacket struct {
	proto tcpip.NetworkProtocolNumber
	pkt   *gstack.PacketBuffer
}

// deliverUpLocked hands pkt to the NIC with its checksum mark.
func (e *groEndpoint) deliverUpLocked(protocol tcpip.NetworkProtocolNumber, pkt *gstack.PacketBuffer) {
	e.validated.Store(pkt.RXChecksumValidated)
	e.Endpoint.DeliverNetworkPacket(protocol, pkt)
	e.validated.Store(false)
}

// Capabilities implements stack.LinkEndpoint; see the type's comment.
func (e *groEndpoint) Capabilities() gstack.LinkEndpointCapabilities {
	c := e.Endpoint.Capabilities()
	if e.validated.Load() {
		c |= gstack.CapabilityRXChecksumOffload
	}
	return c
}

// begin starts a batch: packets are held until end.
func (e *groEndpoint) begin() {
	e.mu.Lock()
	e.batch = true
	e.mu.Unlock()
}

// end closes the batch. sent are the segments the link injected, in
// order, each with a reference end releases; if exactly these came
// through, whole (the super-packet they were cut from) goes up instead of
// them. Otherwise what came through is merged where possible and
// delivered. end takes over the caller's reference to whole (nil: none). The segments
// are released before whole goes up, so that its chunk is no longer shared
// and gVisor parses it in place instead of copying it.
func (e *groEndpoint) end(sent []*gstack.PacketBuffer, proto tcpip.NetworkProtocolNumber, whole *gstack.PacketBuffer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.batch = false
	same := samePackets(e.held, sent)
	if same {
		e.wholeBatches.Add(1)
	} else {
		e.mergedBatches.Add(1)
		for _, h := range e.held {
			h.pkt.NetworkProtocolNumber = h.proto
			e.gro.Enqueue(h.pkt)
		}
		e.gro.Flush()
	}
	for i, h := range e.held {
		h.pkt.DecRef()
		e.held[i] = heldPacket{}
	}
	e.held = e.held[:0]
	for i, pkt := range sent {
		pkt.DecRef()
		sent[i] = nil
	}
	if whole == nil {
		return
	}
	if same {
		e.deliverUpLocked(proto, whole)
	}
	whole.DecRef()
}

// samePackets reports whether held are exactly sent, in order. The link
// holds a reference to every sent packet until end, so a pointer cannot be
// reused within the batch.
func samePackets(held []heldPacket, sent []*gstack.PacketBuffer) bool {
	if len(held) != len(sent) {
		return false
	}
	for i, h := range held {
		if h.pkt != sent[i] {
			return false
		}
	}
	return true
}

// groUp receives the GRO engine's output (under groEndpoint.mu).
type groUp struct{ e *groEndpoint }

// DeliverNetworkPacket implements stack.NetworkDispatcher.
func (u groUp) DeliverNetworkPacket(protocol tcpip.NetworkProtocolNumber, pkt *gstack.PacketBuffer) {
	u.e.deliverUpLocked(protocol, pkt)
}

// DeliverLinkPacket implements stack.NetworkDispatcher.
func (u groUp) DeliverLinkPacket(protocol tcpip.NetworkProtocolNumber, pkt *gstack.PacketBuffer) {
	u.e.Endpoint.DeliverLinkPacket(protocol, pkt)
}
