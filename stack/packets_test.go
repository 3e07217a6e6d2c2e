package stack

import (
	"encoding/binary"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Hand-built packets from the host side of the link (198.18.0.1 and
// fd00:198:18::1) to the peer, for the flood and fuzz tests.

var (
	hostAddr4 = netip.MustParseAddr("198.18.0.1")
	hostAddr6 = netip.MustParseAddr("fd00:198:18::1")
)

func tcpipAddr(a netip.Addr) tcpip.Address { return tcpip.AddrFromSlice(a.AsSlice()) }

// ipv4Packet wraps an IPv4 payload of protocol proto from src to dst.
func ipv4Packet(src, dst netip.Addr, proto uint8, payload []byte) []byte {
	p := make([]byte, header.IPv4MinimumSize+len(payload))
	ip := header.IPv4(p)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(p)),
		TTL:         64,
		Protocol:    proto,
		SrcAddr:     tcpipAddr(src),
		DstAddr:     tcpipAddr(dst),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	copy(p[header.IPv4MinimumSize:], payload)
	return p
}

// tcpSegment builds a TCP header plus payload with a valid checksum for
// the given addresses.
func tcpSegment(src, dst netip.AddrPort, seq, ack uint32, flags header.TCPFlags, payload []byte) []byte {
	b := make([]byte, header.TCPMinimumSize+len(payload))
	tcp := header.TCP(b)
	tcp.Encode(&header.TCPFields{
		SrcPort:    src.Port(),
		DstPort:    dst.Port(),
		SeqNum:     seq,
		AckNum:     ack,
		DataOffset: header.TCPMinimumSize,
		Flags:      flags,
		WindowSize: 65535,
	})
	copy(b[header.TCPMinimumSize:], payload)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, tcpipAddr(src.Addr()), tcpipAddr(dst.Addr()), uint16(len(b)))
	xsum = checksum.Checksum(payload, xsum)
	tcp.SetChecksum(^tcp.CalculateChecksum(xsum))
	return b
}

// tcp4 is an IPv4 TCP segment from the host to the peer.
func tcp4(srcPort, dstPort uint16, seq uint32, flags header.TCPFlags, payload []byte) []byte {
	src := netip.AddrPortFrom(hostAddr4, srcPort)
	dst := netip.AddrPortFrom(DefaultAddr4, dstPort)
	return ipv4Packet(hostAddr4, DefaultAddr4, uint8(header.TCPProtocolNumber), tcpSegment(src, dst, seq, 0, flags, payload))
}

// udp4 is an IPv4 UDP datagram from the host to the peer (checksum 0,
// which IPv4 allows).
func udp4(srcPort, dstPort uint16, payload []byte) []byte {
	b := make([]byte, header.UDPMinimumSize+len(payload))
	header.UDP(b).Encode(&header.UDPFields{SrcPort: srcPort, DstPort: dstPort, Length: uint16(len(b))})
	copy(b[header.UDPMinimumSize:], payload)
	return ipv4Packet(hostAddr4, DefaultAddr4, uint8(header.UDPProtocolNumber), b)
}

// echo4 is an ICMP echo request from the host to the peer.
func echo4(id, seq uint16) []byte {
	b := make([]byte, header.ICMPv4MinimumSize+8)
	icmp := header.ICMPv4(b)
	icmp.SetType(header.ICMPv4Echo)
	icmp.SetIdent(id)
	icmp.SetSequence(seq)
	copy(b[header.ICMPv4MinimumSize:], "unplug!!")
	icmp.SetChecksum(^checksum.Checksum(b, 0))
	return ipv4Packet(hostAddr4, DefaultAddr4, uint8(header.ICMPv4ProtocolNumber), b)
}

// isEchoReply4 reports whether p is the peer's reply to echo4(id, seq).
func isEchoReply4(p []byte, id, seq uint16) bool {
	if len(p) < header.IPv4MinimumSize || header.IPVersion(p) != header.IPv4Version {
		return false
	}
	ip := header.IPv4(p)
	if !ip.IsValid(len(p)) || ip.Protocol() != uint8(header.ICMPv4ProtocolNumber) {
		return false
	}
	icmp := header.ICMPv4(ip.Payload())
	return len(icmp) >= header.ICMPv4MinimumSize && icmp.Type() == header.ICMPv4EchoReply &&
		icmp.Ident() == id && icmp.Sequence() == seq
}

// ipv6Packet wraps payload in an IPv6 header whose first next header is
// next, from the host to the peer.
func ipv6Packet(next uint8, payload []byte) []byte {
	p := make([]byte, header.IPv6MinimumSize+len(payload))
	header.IPv6(p).Encode(&header.IPv6Fields{
		PayloadLength:     uint16(len(payload)),
		TransportProtocol: tcpip.TransportProtocolNumber(next),
		HopLimit:          64,
		SrcAddr:           tcpipAddr(hostAddr6),
		DstAddr:           tcpipAddr(DefaultAddr6),
	})
	copy(p[header.IPv6MinimumSize:], payload)
	return p
}

// tcp6WithExtensions is an IPv6 TCP SYN behind a hop-by-hop options
// header and a destination options header, each 8 bytes of padding.
func tcp6WithExtensions(dstPort uint16) []byte {
	src := netip.AddrPortFrom(hostAddr6, 40000)
	dst := netip.AddrPortFrom(DefaultAddr6, dstPort)
	seg := tcpSegment(src, dst, 1, 0, header.TCPFlagSyn, nil)
	hop := []byte{uint8(header.IPv6DestinationOptionsExtHdrIdentifier), 0, 1, 4, 0, 0, 0, 0}
	dest := []byte{uint8(header.TCPProtocolNumber), 0, 1, 4, 0, 0, 0, 0}
	payload := append(append(hop, dest...), seg...)
	return ipv6Packet(uint8(header.IPv6HopByHopOptionsExtHdrIdentifier), payload)
}

// fragment4 is the second fragment of an IPv4 datagram that never
// completes.
func fragment4() []byte {
	p := udp4(40000, 9, make([]byte, 64))
	binary.BigEndian.PutUint16(p[6:], 8) // fragment offset 64 bytes, no MF
	ip := header.IPv4(p)
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())
	return p
}
