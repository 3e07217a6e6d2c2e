package fault

import (
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/unplug-dev/unplug/internal/packet"
)

// checksumsValid verifies an IP packet's checksums with gVisor's header
// package, as a receiving stack would: the IPv4 header's, then TCP's,
// UDP's (unless absent) or ICMP's.
func checksumsValid(t *testing.T, b []byte) bool {
	t.Helper()
	var src, dst tcpip.Address
	var proto uint8
	var l4 []byte
	switch b[0] >> 4 {
	case 4:
		ip := header.IPv4(b)
		if !ip.IsChecksumValid() {
			return false
		}
		src, dst, proto, l4 = ip.SourceAddress(), ip.DestinationAddress(), ip.Protocol(), ip.Payload()
	case 6:
		ip := header.IPv6(b)
		src, dst, proto, l4 = ip.SourceAddress(), ip.DestinationAddress(), uint8(ip.NextHeader()), ip.Payload()
	}
	switch proto {
	case packet.ProtoTCP:
		tcp := header.TCP(l4)
		payload := l4[tcp.DataOffset():]
		return tcp.IsChecksumValid(src, dst, checksum.Checksum(payload, 0), uint16(len(payload)))
	case packet.ProtoUDP:
		udp := header.UDP(l4)
		if udp.Checksum() == 0 && b[0]>>4 == 4 {
			return true
		}
		payload := l4[header.UDPMinimumSize:]
		return udp.IsChecksumValid(src, dst, checksum.Checksum(payload, 0))
	case packet.ProtoICMP:
		return checksum.Checksum(l4, 0) == 0xffff
	case packet.ProtoICMPv6:
		return header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: header.ICMPv6(l4), Src: src, Dst: dst}) == 0
	}
	return true
}

func TestResetReply(t *testing.T) {
	tests := []struct {
		name     string
		dir      packet.Direction
		pkt      []byte
		seq, ack uint32
		flags    uint8
	}{
		// A SYN is answered RST|ACK acknowledging it: connect() gets ECONNREFUSED.
		{"syn", packet.In, in(packet.FlagSYN, 1000, 0, 500, 0), 0, 1001, packet.FlagRST | packet.FlagACK},
		// A segment with ACK: the RST takes its ack as seq, which is the
		// receiver's rcv.nxt, so the receiver accepts it.
		{"data", packet.In, in(packet.FlagACK|packet.FlagPSH, 1001, 5001, 500, 100), 5001, 0, packet.FlagRST},
		{"peer data", packet.Out, out(packet.FlagACK, 5001, 1101, 500, 10), 1101, 0, packet.FlagRST},
		{"fin without ack", packet.In, in(packet.FlagFIN, 7, 0, 500, 3), 0, 11, packet.FlagRST | packet.FlagACK},
		{"ipv6", packet.Out, seg{peer6, app6, 80, 40000, packet.FlagSYN | packet.FlagACK, 5, 9, 500, 0}.build(), 9, 0, packet.FlagRST},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := parsed(t, tt.dir, tt.pkt)
			b := resetReply(p)
			if !checksumsValid(t, b) {
				t.Fatalf("RST %x has bad checksums", b)
			}
			r := parsed(t, packet.Both&^tt.dir, b)
			if r.Src != p.Dst || r.Dst != p.Src || r.SrcPort != p.DstPort || r.DstPort != p.SrcPort {
				t.Errorf("RST %+v does not go back to the sender of %+v", r, p)
			}
			if r.Seq != tt.seq || r.Ack != tt.ack || r.Flags != tt.flags || r.PayloadLen != 0 {
				t.Errorf("RST seq %d ack %d flags %#x, want %d %d %#x", r.Seq, r.Ack, r.Flags, tt.seq, tt.ack, tt.flags)
			}
		})
	}
	if b := resetReply(parsed(t, packet.In, in(packet.FlagRST, 1, 0, 0, 0))); b != nil {
		t.Error("a RST was answered")
	}
	if b := resetReply(parsed(t, packet.In, udpPacket())); b != nil {
		t.Error("UDP was answered with a RST")
	}
}

func TestResetInPlace(t *testing.T) {
	p := parsed(t, packet.Out, out(packet.FlagACK|packet.FlagPSH, 5001, 1101, 500, 100))
	b := resetInPlace(p)
	if !checksumsValid(t, b) {
		t.Fatalf("RST %x has bad checksums", b)
	}
	r := parsed(t, packet.Out, b)
	if r.Src != p.Src || r.SrcPort != p.SrcPort || r.Seq != 5001 || r.Ack != 1101 || r.Flags != packet.FlagRST|packet.FlagACK {
		t.Errorf("RST %+v", r)
	}
}

// udpPacket is an IPv4 UDP datagram with 4 bytes and a valid checksum.
func udpPacket() []byte {
	b := make([]byte, 20+8+4)
	b[0], b[8], b[9] = 0x45, 64, packet.ProtoUDP
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	copy(b[12:], app4.AsSlice())
	copy(b[16:], peer4.AsSlice())
	binary.BigEndian.PutUint16(b[10:], ^checksum.Checksum(b[:20], 0))
	u := b[20:]
	binary.BigEndian.PutUint16(u[0:], 5353)
	binary.BigEndian.PutUint16(u[2:], 53)
	binary.BigEndian.PutUint16(u[4:], 12)
	copy(u[8:], "ping")
	binary.BigEndian.PutUint16(u[6:], ^transportChecksum(b, u, packet.ProtoUDP))
	return b
}

// icmpEcho is an IPv4 ICMP echo request with a valid checksum.
func icmpEcho() []byte {
	b := make([]byte, 20+8)
	b[0], b[8], b[9] = 0x45, 64, packet.ProtoICMP
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	copy(b[12:], app4.AsSlice())
	copy(b[16:], peer4.AsSlice())
	binary.BigEndian.PutUint16(b[10:], ^checksum.Checksum(b[:20], 0))
	b[20] = 8
	binary.BigEndian.PutUint16(b[22:], ^checksum.Checksum(b[20:], 0))
	return b
}

// TestCorrupt checks that every corruption breaks a checksum the receiver
// verifies, flipping exactly one bit, for every bit position.
func TestCorrupt(t *testing.T) {
	noSum := udpPacket()
	noSum[26], noSum[27] = 0, 0
	tests := []struct {
		name string
		pkt  []byte
		ok   bool
	}{
		{"tcp data", in(packet.FlagACK|packet.FlagPSH, 1, 2, 500, 100), true},
		{"tcp pure ack", in(packet.FlagACK, 1, 2, 500, 0), true},
		{"tcp6 data", seg{app6, peer6, 1, 2, packet.FlagACK, 1, 2, 500, 33}.build(), true},
		{"tcp6 syn", seg{app6, peer6, 1, 2, packet.FlagSYN, 1, 0, 500, 0}.build(), true},
		{"udp", udpPacket(), true},
		{"udp without checksum", noSum, true},
		{"icmp", icmpEcho(), true},
		{"ipv6 unknown protocol", func() []byte {
			b := seg{app6, peer6, 1, 2, packet.FlagACK, 1, 2, 500, 0}.build()
			b[6] = 99
			return b
		}(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !checksumsValid(t, tt.pkt) {
				t.Fatal("test packet has bad checksums")
			}
			for r := range 64 * 8 {
				b := append([]byte(nil), tt.pkt...)
				if got := corrupt(b, r*977); got != tt.ok {
					t.Fatalf("corrupt = %v, want %v", got, tt.ok)
				}
				if !tt.ok {
					return
				}
				flipped := 0
				for i := range b {
					for x := b[i] ^ tt.pkt[i]; x != 0; x &= x - 1 {
						flipped++
					}
				}
				if flipped != 1 {
					t.Fatalf("r=%d flipped %d bits", r, flipped)
				}
				if checksumsValid(t, b) {
					t.Fatalf("r=%d: corrupted packet %x still verifies", r, b)
				}
			}
		})
	}
}
