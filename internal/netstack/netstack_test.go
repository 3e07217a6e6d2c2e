package netstack

import (
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

func recovery(t *testing.T, s *stack.Stack) tcpip.TCPRecovery {
	t.Helper()
	var r tcpip.TCPRecovery
	if err := s.TransportProtocolOption(tcp.ProtocolNumber, &r); err != nil {
		t.Fatalf("read TCPRecovery: %s", err)
	}
	return r
}

// TestPeerAndClientTCP: the peer runs classic RTO recovery (RACK off) on
// every link; a plain stack (the virtual client) keeps gVisor's default
// RACK. Both have SACK.
func TestPeerAndClientTCP(t *testing.T) {
	tests := []struct {
		name     string
		build    func(tcpip.Clock, uint64) (*stack.Stack, error)
		wantRACK bool
	}{
		{"New", New, true},
		{"NewPeer", NewPeer, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := tt.build(faketime.NewManualClock(), 1)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.Close)
			if got := recovery(t, s)&tcpip.TCPRACKLossDetection != 0; got != tt.wantRACK {
				t.Errorf("RACK loss detection = %v, want %v", got, tt.wantRACK)
			}
			var sack tcpip.TCPSACKEnabled
			if err := s.TransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil || !sack {
				t.Errorf("SACK = %v (%v), want on", sack, err)
			}
		})
	}
}

func TestAddAddressRoutes(t *testing.T) {
	s, err := New(faketime.NewManualClock(), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.CreateNIC(1, channel.New(1, 1500, "")); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"198.18.0.2", "fd00:198:18::2"} {
		if err := AddAddress(s, 1, netip.MustParseAddr(a)); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(s.GetRouteTable()); got != 2 {
		t.Errorf("routes = %d, want one per family", got)
	}
	if err := AddAddress(s, 1, netip.MustParseAddr("198.18.0.2")); err == nil {
		t.Error("adding the same address twice succeeded")
	}
}
