package fault

import (
	"encoding/binary"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"

	"github.com/unplug-dev/unplug/internal/packet"
)

// Packets the fault layer makes up: RSTs for reject and rst-at-seq rules,
// and corrupted copies for corrupt rules. Headers are written by hand so the
// bytes are exactly what a host would send (TTL 64, DF, no options).

const (
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
	tcpHeaderLen  = 20
	forgedTTL     = 64
)

// resetReply returns the RST a host without the connection sends in answer
// to segment p (RFC 9293 3.10.7.1, as Linux's tcp_v4_send_reset does): from
// p's receiver to p's sender; seq = p's ack if p carries one, otherwise an
// ACK of everything p occupied. It returns nil for anything but a TCP
// segment without RST (a RST is never answered).
func resetReply(p *packet.Packet) []byte {
	if p.Proto != packet.ProtoTCP || p.Version == 0 || p.Flags&packet.FlagRST != 0 {
		return nil
	}
	if p.Flags&packet.FlagACK != 0 {
		return buildTCP(p.Dst, p.Src, p.DstPort, p.SrcPort, p.Ack, 0, packet.FlagRST)
	}
	occupied := uint32(p.PayloadLen)
	if p.Flags&packet.FlagSYN != 0 {
		occupied++
	}
	if p.Flags&packet.FlagFIN != 0 {
		occupied++
	}
	return buildTCP(p.Dst, p.Src, p.DstPort, p.SrcPort, 0, p.Seq+occupied, packet.FlagRST|packet.FlagACK)
}

// resetInPlace returns a RST from p's sender to p's receiver carrying p's
// sequence number, so that a receiver that got everything before p accepts
// it (RFC 5961 wants seq == rcv.nxt exactly). It returns nil for anything
// but a TCP segment.
func resetInPlace(p *packet.Packet) []byte {
	if p.Proto != packet.ProtoTCP || p.Version == 0 {
		return nil
	}
	return buildTCP(p.Src, p.Dst, p.SrcPort, p.DstPort, p.Seq, p.Ack, packet.FlagRST|(p.Flags&packet.FlagACK))
}

// buildTCP returns an IPv4 or IPv6 packet (by src's family) carrying a TCP
// header without options or payload, with valid checksums.
func buildTCP(src, dst netip.Addr, sport, dport uint16, seq, ack uint32, flags uint8) []byte {
	var b []byte
	var tcp []byte
	if src.Is4() {
		b = make([]byte, ipv4HeaderLen+tcpHeaderLen)
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		binary.BigEndian.PutUint16(b[6:], 0x4000) // DF
		b[8] = forgedTTL
		b[9] = packet.ProtoTCP
		s4, d4 := src.As4(), dst.As4()
		copy(b[12:16], s4[:])
		copy(b[16:20], d4[:])
		binary.BigEndian.PutUint16(b[10:], ^checksum.Checksum(b[:ipv4HeaderLen], 0))
		tcp = b[ipv4HeaderLen:]
	} else {
		b = make([]byte, ipv6HeaderLen+tcpHeaderLen)
		b[0] = 0x60
		binary.BigEndian.PutUint16(b[4:], tcpHeaderLen)
		b[6] = packet.ProtoTCP
		b[7] = forgedTTL
		s6, d6 := src.As16(), dst.As16()
		copy(b[8:24], s6[:])
		copy(b[24:40], d6[:])
		tcp = b[ipv6HeaderLen:]
	}
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = (tcpHeaderLen / 4) << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[16:], ^transportChecksum(b, tcp, packet.ProtoTCP))
	return b
}

// transportChecksum returns the one's complement sum of the pseudo-header
// of ip and of the transport segment l4 (checksum field included).
func transportChecksum(ip, l4 []byte, proto uint8) uint16 {
	var sum uint16
	if ip[0]>>4 == 4 {
		sum = checksum.Checksum(ip[12:20], 0)
	} else {
		sum = checksum.Checksum(ip[8:40], 0)
	}
	var tail [4]byte
	binary.BigEndian.PutUint16(tail[0:], uint16(proto))
	binary.BigEndian.PutUint16(tail[2:], uint16(len(l4)))
	sum = checksum.Checksum(tail[:], sum)
	return checksum.Checksum(l4, sum)
}

// completeTCPChecksum computes the TCP checksum of the segment b in place
// (its field may hold anything); false if b is not a TCP segment.
func completeTCPChecksum(b []byte) bool {
	off, proto := transportOffset(b)
	if off < 0 || proto != packet.ProtoTCP || len(b) < off+tcpHeaderLen {
		return false
	}
	var sum uint16
	if b[0]>>4 == 4 {
		sum = checksum.Checksum(b[12:20], 0)
	} else {
		sum = checksum.Checksum(b[8:40], 0)
	}
	sum = checksum.Combine(sum, uint16(packet.ProtoTCP))
	sum = checksum.Combine(sum, uint16(len(b)-off))
	b[off+16], b[off+17] = 0, 0
	binary.BigEndian.PutUint16(b[off+16:], ^checksum.Checksum(b[off:], sum))
	return true
}

// transportOffset returns where the transport header of the complete IP
// packet b starts and its protocol, or -1 for a packet without one (a
// later fragment, a truncated or unknown packet).
func transportOffset(b []byte) (int, uint8) {
	if len(b) < 1 {
		return -1, 0
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < ipv4HeaderLen {
			return -1, 0
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < ipv4HeaderLen || ihl > len(b) || binary.BigEndian.Uint16(b[6:8])&0x1fff != 0 {
			return -1, 0
		}
		return ihl, b[9]
	case 6:
		if len(b) < ipv6HeaderLen {
			return -1, 0
		}
		next, off := b[6], ipv6HeaderLen
		for hops := 0; hops <= 8; hops++ {
			switch next {
			case 0, 43, 60:
				if len(b) < off+8 {
					return -1, 0
				}
				next, off = b[off], off+(int(b[off+1])+1)*8
				continue
			case 44:
				if len(b) < off+8 || binary.BigEndian.Uint16(b[off+2:off+4])>>3 != 0 {
					return -1, 0
				}
				next, off = b[off], off+8
				continue
			}
			if off > len(b) {
				return -1, 0
			}
			return off, next
		}
	}
	return -1, 0
}

// corrupt flips one bit of the IP packet b in place so that its receiver
// finds a bad checksum and drops it, the way line noise would: a bit of the
// TCP or UDP payload when there is one (chosen by r), otherwise of the
// transport checksum, or of the IPv4 header checksum for packets whose
// transport checksum is absent or optional. A single flipped bit always
// changes a one's complement sum. It reports false when b has no checksum
// to break (an IPv6 packet of another protocol, a later fragment).
func corrupt(b []byte, r int) bool {
	off, proto := transportOffset(b)
	if off < 0 {
		return false
	}
	v4 := b[0]>>4 == 4
	bit := byte(1) << (uint(r) % 8)
	pick := (r >> 3) & 0xffffff
	flip := func(i int) bool {
		b[i] ^= bit
		return true
	}
	ipSum := func() bool {
		if !v4 {
			return false
		}
		return flip(10 + pick%2)
	}
	l4 := b[off:]
	var sumAt, hdr int
	switch proto {
	case packet.ProtoTCP:
		if len(l4) < tcpHeaderLen {
			return ipSum()
		}
		sumAt, hdr = 16, int(l4[12]>>4)*4
	case packet.ProtoUDP:
		if len(l4) < 8 {
			return ipSum()
		}
		sumAt, hdr = 6, 8
		if v4 && (binary.BigEndian.Uint16(l4[6:8]) == 0 || len(l4) == 8) {
			// No UDP checksum, or flipping it could make it read "none".
			return ipSum()
		}
	case packet.ProtoICMP, packet.ProtoICMPv6:
		if len(l4) < 4 {
			return ipSum()
		}
		sumAt, hdr = 2, len(l4)
	default:
		return ipSum()
	}
	if hdr >= 8 && hdr < len(l4) { // a sane header with payload after it
		return flip(off + hdr + pick%(len(l4)-hdr))
	}
	return flip(off + sumAt + pick%2)
}
