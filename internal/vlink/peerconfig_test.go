package vlink

import (
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// TestPeerIsConfiguredAsOnTheTUN: the pair's peer stack has the TCP of
// stack.New's peer (netstack.NewPeer: RACK off, classic RTO recovery),
// while the client keeps gVisor's RACK, so virtual runs test the peer that
// real runs test.
func TestPeerIsConfiguredAsOnTheTUN(t *testing.T) {
	p, err := NewPair(PairOptions{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	for _, tt := range []struct {
		name  string
		stack *stack.Stack
		rack  bool
	}{
		{"peer", p.Peer, false},
		{"client", p.Client, true},
	} {
		var r tcpip.TCPRecovery
		if terr := tt.stack.TransportProtocolOption(tcp.ProtocolNumber, &r); terr != nil {
			t.Fatalf("%s: %s", tt.name, terr)
		}
		if got := r&tcpip.TCPRACKLossDetection != 0; got != tt.rack {
			t.Errorf("%s: RACK = %v, want %v", tt.name, got, tt.rack)
		}
	}
}
