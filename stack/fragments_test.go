package stack

import (
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
	"github.com/unplug-dev/unplug/tun"
)

// TestFaultRulesSeeFragments sends a SYN for the echo port as IPv4 and
// IPv6 fragments, split after the whole TCP header or inside it (a tiny
// first fragment, RFC 1858), and checks whether gVisor reassembled and
// delivered it: rules that select by port or flags must stop the
// datagram however it was cut, and with no rule a properly fragmented
// SYN still arrives.
func TestFaultRulesSeeFragments(t *testing.T) {
	for _, tc := range []struct {
		name      string
		rule      string
		v6, tiny  bool
		delivered bool
	}{
		{name: "v4 no rule", delivered: true},
		{name: "v6 no rule", v6: true, delivered: true},
		{name: "v4 port rule", rule: "drop port=7 dir=in"},
		{name: "v4 flags rule", rule: "drop flags=syn port=7 dir=in"},
		{name: "v4 match rule", rule: "drop match=syn dir=in"},
		{name: "v4 tiny, port rule", rule: "drop port=7 dir=in", tiny: true},
		{name: "v4 tiny, flags rule", rule: "drop flags=syn dir=in", tiny: true},
		{name: "v6 port rule", rule: "drop port=7 dir=in", v6: true},
		{name: "v6 tiny, flags rule", rule: "drop flags=syn port=7 dir=in", v6: true, tiny: true},
		{name: "v4 tiny, no rule", tiny: true},
		{name: "v4 other port", rule: "drop port=80 dir=in", delivered: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := tun.NewMemoryPair(1500)
			defer b.Close()
			var specs []fault.Spec
			if tc.rule != "" {
				sp, err := fault.ParseSpec(tc.rule)
				if err != nil {
					t.Fatal(err)
				}
				specs = append(specs, sp)
			}
			peer, err := New(context.Background(), Options{Device: a, Faults: specs, Services: services.Config{Echo: 7}})
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			cut := 24 // past the 20-byte TCP header
			if tc.tiny {
				cut = 8 // ports and sequence number only
			}
			var frags [][]byte
			if tc.v6 {
				frags = synFragments6(cut)
			} else {
				frags = synFragments4(cut)
			}
			before := peer.Stack.Stats().IP.PacketsDelivered.Value()
			for _, f := range frags {
				if _, err := b.Write(f); err != nil {
					t.Fatal(err)
				}
			}
			// The link delivers in order and IP handles a packet before
			// the next: once the ping is answered, the fragments are done.
			if _, err := b.Write(echo4(7, 7)); err != nil {
				t.Fatal(err)
			}
			awaitReply(t, b, func(p []byte) bool { return isEchoReply4(p, 7, 7) })
			got := peer.Stack.Stats().IP.PacketsDelivered.Value() - before - 1 // the ping
			if (got == 1) != tc.delivered {
				t.Errorf("fragmented SYN delivered to TCP: %v, want %v (fault stats: dropped %d, fragments %d)",
					got == 1, tc.delivered, peer.Fault.Stats().Dropped.Load(), peer.Fault.Stats().Fragments.Load())
			}
		})
	}
}

// synSegment is a SYN for the echo port carrying 16 bytes, so that a
// fragment boundary can fall after its header.
func synSegment(src, dst netip.Addr) []byte {
	return tcpSegment(netip.AddrPortFrom(src, 40000), netip.AddrPortFrom(dst, 7), 1, 0, header.TCPFlagSyn, make([]byte, 16))
}

// synFragments4 cuts synSegment into two IPv4 fragments at byte cut of
// the TCP segment (a multiple of 8).
func synFragments4(cut int) [][]byte {
	seg := synSegment(hostAddr4, DefaultAddr4)
	first := ipv4Packet(hostAddr4, DefaultAddr4, uint8(header.TCPProtocolNumber), seg[:cut])
	second := ipv4Packet(hostAddr4, DefaultAddr4, uint8(header.TCPProtocolNumber), seg[cut:])
	for i, p := range [][]byte{first, second} {
		ip := header.IPv4(p)
		ip.SetID(4242)
		if i == 0 {
			ip.SetFlagsFragmentOffset(header.IPv4FlagMoreFragments, 0)
		} else {
			ip.SetFlagsFragmentOffset(0, uint16(cut))
		}
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
	}
	return [][]byte{first, second}
}

// synFragments6 is synFragments4 for IPv6.
func synFragments6(cut int) [][]byte {
	seg := synSegment(hostAddr6, DefaultAddr6)
	var out [][]byte
	for i, part := range [][]byte{seg[:cut], seg[cut:]} {
		fh := make([]byte, 8)
		fh[0] = uint8(header.TCPProtocolNumber)
		off := uint16(0)
		if i == 1 {
			off = uint16(cut)
		}
		if i == 0 {
			off |= 1 // more fragments
		}
		binary.BigEndian.PutUint16(fh[2:], off)
		binary.BigEndian.PutUint32(fh[4:], 4242)
		out = append(out, ipv6Packet(uint8(header.IPv6FragmentExtHdrIdentifier), append(fh, part...)))
	}
	return out
}

// awaitReply reads b until match accepts a packet.
func awaitReply(t *testing.T, b *tun.MemoryDevice, match func([]byte) bool) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, err := b.Read(buf)
			if err != nil || match(buf[:n]) {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(safetyTimeout):
		t.Fatal("no reply to the ping")
	}
}
