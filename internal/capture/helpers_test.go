package capture

import (
	"net/netip"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack/fault"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Addresses from unplug's ranges: the application (host) side and the peer.
var (
	app4  = netip.MustParseAddr("198.18.0.1")
	peer4 = netip.MustParseAddr("198.18.0.2")
	app6  = netip.MustParseAddr("fd00:198:18::1")
	peer6 = netip.MustParseAddr("fd00:198:18::2")
)

// seg describes a TCP segment to build.
type seg struct {
	src, dst     netip.Addr
	sport, dport uint16
	seq, ack     uint32
	flags        header.TCPFlags
	win          uint16
	payload      int
}

// ipHeader builds an IPv4 or IPv6 header (by the source address family) for
// a transport payload of l4Len bytes, followed by room for it.
func ipHeader(src, dst netip.Addr, proto tcpip.TransportProtocolNumber, l4Len int) (pkt []byte, l4 []byte) {
	if src.Is4() {
		pkt = make([]byte, header.IPv4MinimumSize+l4Len)
		ip := header.IPv4(pkt)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(len(pkt)),
			TTL:         64,
			Protocol:    uint8(proto),
			SrcAddr:     tcpip.AddrFrom4(src.As4()),
			DstAddr:     tcpip.AddrFrom4(dst.As4()),
		})
		ip.SetChecksum(^ip.CalculateChecksum())
		return pkt, pkt[header.IPv4MinimumSize:]
	}
	pkt = make([]byte, header.IPv6MinimumSize+l4Len)
	header.IPv6(pkt).Encode(&header.IPv6Fields{
		PayloadLength:     uint16(l4Len),
		TransportProtocol: proto,
		HopLimit:          64,
		SrcAddr:           tcpip.AddrFrom16(src.As16()),
		DstAddr:           tcpip.AddrFrom16(dst.As16()),
	})
	return pkt, pkt[header.IPv6MinimumSize:]
}

func tcpipAddr(a netip.Addr) tcpip.Address {
	if a.Is4() {
		return tcpip.AddrFrom4(a.As4())
	}
	return tcpip.AddrFrom16(a.As16())
}

// build returns the raw IP packet for s, with valid checksums.
func (s seg) build() []byte {
	l4Len := header.TCPMinimumSize + s.payload
	pkt, l4 := ipHeader(s.src, s.dst, header.TCPProtocolNumber, l4Len)
	tcp := header.TCP(l4)
	tcp.Encode(&header.TCPFields{
		SrcPort:    s.sport,
		DstPort:    s.dport,
		SeqNum:     s.seq,
		AckNum:     s.ack,
		DataOffset: header.TCPMinimumSize,
		Flags:      s.flags,
		WindowSize: s.win,
	})
	for i := range s.payload {
		l4[header.TCPMinimumSize+i] = byte('a' + i%26)
	}
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, tcpipAddr(s.src), tcpipAddr(s.dst), uint16(l4Len))
	xsum = checksum.Checksum(l4[header.TCPMinimumSize:], xsum)
	tcp.SetChecksum(^tcp.CalculateChecksum(xsum))
	return pkt
}

// udpPacket returns a UDP datagram with n payload bytes.
func udpPacket(src, dst netip.Addr, sport, dport uint16, n int) []byte {
	pkt, l4 := ipHeader(src, dst, header.UDPProtocolNumber, header.UDPMinimumSize+n)
	header.UDP(l4).Encode(&header.UDPFields{SrcPort: sport, DstPort: dport, Length: uint16(len(l4))})
	return pkt
}

// icmpEcho4 returns an ICMPv4 echo request with n payload bytes.
func icmpEcho4(src, dst netip.Addr, n int) []byte {
	pkt, l4 := ipHeader(src, dst, header.ICMPv4ProtocolNumber, header.ICMPv4MinimumSize+n)
	header.ICMPv4(l4).SetType(header.ICMPv4Echo)
	return pkt
}

// parsed parses data as the fault layer would.
func parsed(t testing.TB, dir packet.Direction, data []byte) *packet.Packet {
	t.Helper()
	p := new(packet.Packet)
	_ = packet.Parse(dir, data, p) // unparseable packets keep Version 0
	return p
}

// event builds the fault layer's event for data.
func event(t testing.TB, at time.Time, dir packet.Direction, data []byte, d fault.Decision, comment string) *fault.Event {
	t.Helper()
	return &fault.Event{Time: at, Packet: parsed(t, dir, data), Data: data, Decision: d, Comment: comment}
}

// base is the start time used across tests.
var base = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
