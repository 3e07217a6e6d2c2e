package vlink

import (
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// DefaultMTU is the link MTU when none is given: the TUN device's default.
const DefaultMTU = 1500

// LinkEndpoint is one end of an in-process point-to-point link (see NewLink).
// A packet written on one end is copied and handed to the other end's stack
// after the link's one-way delay by a timer on the link's clock, never
// synchronously inside WritePackets, which gVisor calls with TCP locks held.
type LinkEndpoint struct {
	clock tcpip.Clock
	delay time.Duration
	other *LinkEndpoint

	mu         sync.Mutex
	dispatcher stack.NetworkDispatcher
	mtu        uint32
	closed     bool
	inbound    map[*delivery]struct{} // packets on the wire towards this end

	sent, received, discarded atomic.Uint64
}

var _ stack.LinkEndpoint = (*LinkEndpoint)(nil)

// LinkStats counts one end's packets.
type LinkStats struct {
	Sent      uint64 // written by this end's stack
	Received  uint64 // delivered to this end's stack
	Discarded uint64 // arrived after this end was closed or detached
	InFlight  int    // on the wire towards this end
}

// NewLink returns the two ends of a link that carries every packet after
// delay (0 = at the current instant, on the clock's next firing) and
// advertises mtu (0 = DefaultMTU). Give one end to each stack's CreateNIC;
// on the TUN path the client end corresponds to the kernel and the peer end
// to the TUN device under the fault layer.
func NewLink(clock tcpip.Clock, delay time.Duration, mtu uint32) (client, peer *LinkEndpoint) {
	if mtu == 0 {
		mtu = DefaultMTU
	}
	client = &LinkEndpoint{clock: clock, delay: delay, mtu: mtu, inbound: map[*delivery]struct{}{}}
	peer = &LinkEndpoint{clock: clock, delay: delay, mtu: mtu, inbound: map[*delivery]struct{}{}}
	client.other, peer.other = peer, client
	return client, peer
}

// Stats returns a snapshot of this end's counters.
func (e *LinkEndpoint) Stats() LinkStats {
	e.mu.Lock()
	inflight := len(e.inbound)
	e.mu.Unlock()
	return LinkStats{
		Sent:      e.sent.Load(),
		Received:  e.received.Load(),
		Discarded: e.discarded.Load(),
		InFlight:  inflight,
	}
}

// delivery is one packet on the wire.
type delivery struct {
	to    *LinkEndpoint
	proto tcpip.NetworkProtocolNumber
	pkt   *stack.PacketBuffer
	timer tcpip.Timer
}

// WritePackets implements stack.LinkEndpoint: each packet is copied, as a
// wire would, and scheduled for delivery at the other end.
func (e *LinkEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		e.sent.Add(1)
		e.other.schedule(pkt)
		n++
	}
	return n, nil
}

// schedule puts a copy of pkt on the wire towards e.
func (e *LinkEndpoint) schedule(pkt *stack.PacketBuffer) {
	d := &delivery{to: e, proto: pkt.NetworkProtocolNumber}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		e.discarded.Add(1)
		return
	}
	d.pkt = stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(pkt.ToView())})
	e.inbound[d] = struct{}{}
	d.timer = e.clock.AfterFunc(e.delay, d.deliver)
}

// deliver hands the packet to the receiving stack. Its name is what a
// Clock.OnFire hook reports for packet arrivals.
func (d *delivery) deliver() {
	e := d.to
	e.mu.Lock()
	if _, ok := e.inbound[d]; !ok { // discarded by Close
		e.mu.Unlock()
		return
	}
	delete(e.inbound, d)
	disp := e.dispatcher
	e.mu.Unlock()
	if disp == nil {
		e.discarded.Add(1)
	} else {
		e.received.Add(1)
		disp.DeliverNetworkPacket(d.proto, d.pkt)
	}
	d.pkt.DecRef()
}

// Attach implements stack.LinkEndpoint.
func (e *LinkEndpoint) Attach(dispatcher stack.NetworkDispatcher) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dispatcher = dispatcher
}

// IsAttached implements stack.LinkEndpoint.
func (e *LinkEndpoint) IsAttached() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dispatcher != nil
}

// Close implements stack.LinkEndpoint: packets still on the wire towards this
// end are discarded and later ones are refused.
func (e *LinkEndpoint) Close() {
	e.mu.Lock()
	e.closed = true
	pending := e.inbound
	e.inbound = map[*delivery]struct{}{}
	e.mu.Unlock()
	for d := range pending {
		d.timer.Stop()
		e.discarded.Add(1)
		d.pkt.DecRef()
	}
}

// Wait implements stack.LinkEndpoint; the link has no goroutines.
func (*LinkEndpoint) Wait() {}

// MTU implements stack.LinkEndpoint.
func (e *LinkEndpoint) MTU() uint32 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.mtu
}

// SetMTU implements stack.LinkEndpoint.
func (e *LinkEndpoint) SetMTU(mtu uint32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mtu = mtu
}

// MaxHeaderLength implements stack.LinkEndpoint; the link adds no header.
func (*LinkEndpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.LinkEndpoint; like a TUN device the link has
// no link-layer address.
func (*LinkEndpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.LinkEndpoint; it is ignored.
func (*LinkEndpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.LinkEndpoint: none, so that checksums are
// computed and verified as they are on the TUN path.
func (*LinkEndpoint) Capabilities() stack.LinkEndpointCapabilities { return 0 }

// ARPHardwareType implements stack.LinkEndpoint.
func (*LinkEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.LinkEndpoint; the link adds no header.
func (*LinkEndpoint) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.LinkEndpoint; there is no header to parse.
func (*LinkEndpoint) ParseHeader(*stack.PacketBuffer) bool { return true }

// SetOnCloseAction implements stack.LinkEndpoint; there is no device to
// destroy.
func (*LinkEndpoint) SetOnCloseAction(func()) {}
