package vlink

import (
	"slices"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// sink is a NetworkDispatcher that records what arrives and when.
type sink struct {
	clock *Clock
	mu    sync.Mutex
	got   []string
}

func (s *sink) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	v := pkt.ToView()
	defer v.Release()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, string(v.AsSlice())+"@"+s.clock.Elapsed().String())
}

func (*sink) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

func (s *sink) arrived() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// write sends payloads as separate packets on e and releases them at once,
// as a stack does after WritePackets: the link must hold its own copies.
func write(t *testing.T, e *LinkEndpoint, payloads ...string) {
	t.Helper()
	var l stack.PacketBufferList
	for _, p := range payloads {
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData([]byte(p))})
		pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
		l.PushBack(pkt)
	}
	if n, err := e.WritePackets(l); n != len(payloads) || err != nil {
		t.Fatalf("WritePackets: %d, %v", n, err)
	}
	l.DecRef()
}

func TestLinkDelay(t *testing.T) {
	tests := []struct {
		name  string
		delay time.Duration
	}{
		{"zero", 0},
		{"5ms", 5 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := NewClock()
			client, peer := NewLink(clock, tt.delay, 0)
			if client.MTU() != DefaultMTU || peer.MTU() != DefaultMTU {
				t.Fatalf("MTU %d/%d, want %d", client.MTU(), peer.MTU(), DefaultMTU)
			}
			atPeer, atClient := &sink{clock: clock}, &sink{clock: clock}
			peer.Attach(atPeer)
			client.Attach(atClient)

			write(t, client, "a", "b")
			write(t, peer, "c")
			if len(atPeer.arrived()) != 0 || len(atClient.arrived()) != 0 {
				t.Fatal("delivered synchronously inside WritePackets")
			}
			if st := peer.Stats(); st.InFlight != 2 || client.Stats().Sent != 2 {
				t.Fatalf("in flight towards the peer %d, sent %d; want 2, 2", st.InFlight, client.Stats().Sent)
			}
			if tt.delay > 0 {
				clock.AdvanceTo(tt.delay - time.Nanosecond)
				if len(atPeer.arrived()) != 0 {
					t.Fatal("delivered early")
				}
			}
			clock.AdvanceTo(tt.delay)
			at := "@" + tt.delay.String()
			if got, want := atPeer.arrived(), []string{"a" + at, "b" + at}; !slices.Equal(got, want) {
				t.Fatalf("peer got %v, want %v", got, want)
			}
			if got, want := atClient.arrived(), []string{"c" + at}; !slices.Equal(got, want) {
				t.Fatalf("client got %v, want %v", got, want)
			}
			if st := peer.Stats(); st != (LinkStats{Sent: 1, Received: 2}) {
				t.Fatalf("peer stats %+v", st)
			}
		})
	}
}

func TestLinkDetachAndClose(t *testing.T) {
	clock := NewClock()
	client, peer := NewLink(clock, time.Millisecond, 9000)
	if peer.MTU() != 9000 || peer.IsAttached() {
		t.Fatalf("new end: MTU %d, attached %v", peer.MTU(), peer.IsAttached())
	}

	// Nobody attached: the packet is discarded on arrival.
	write(t, client, "lost")
	clock.AdvanceTo(time.Millisecond)
	if st := peer.Stats(); st.Discarded != 1 || st.Received != 0 {
		t.Fatalf("detached end: %+v", st)
	}

	// Closing an end discards what is on the wire towards it, disarms the
	// deliveries, and refuses later packets.
	s := &sink{clock: clock}
	peer.Attach(s)
	write(t, client, "x", "y")
	peer.Close()
	if clock.Pending() != 0 {
		t.Fatalf("%d deliveries still armed after Close", clock.Pending())
	}
	write(t, client, "z")
	clock.AdvanceTo(time.Second)
	if st := peer.Stats(); len(s.arrived()) != 0 || st.Discarded != 4 || st.InFlight != 0 {
		t.Fatalf("closed end got %v, stats %+v", s.arrived(), st)
	}
}
