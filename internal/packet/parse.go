package packet

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// Packet is the classifier's view of one IP packet: what the fault rules,
// the flow tracker and the capture's observers read. Parsing fills it in
// place without allocating.
type Packet struct {
	Dir        Direction
	Version    uint8 // 4 or 6
	Proto      uint8 // transport protocol number (after IPv6 extension headers)
	Src, Dst   netip.Addr
	SrcPort    uint16 // TCP/UDP only
	DstPort    uint16
	Flags      uint8 // TCP only
	Seq, Ack   uint32
	Window     uint16
	PayloadLen int // transport payload bytes (TCP data length)
	Len        int // whole packet length
	// Fragment says whether the packet is an IP fragment, and which: only
	// the first carries the transport header (ports, flags, sequence).
	Fragment Fragment
}

// Fragment tells IP fragments apart: the transport fields of a Packet are
// read only from an unfragmented packet or a first fragment.
type Fragment uint8

// Kinds of IP fragment.
const (
	NotFragment   Fragment = iota
	FirstFragment          // offset 0, more fragments follow
	LaterFragment          // offset > 0: no transport header
)

// Errors from Parse. The fault layer passes unparseable packets through
// unmatched except by rules without selectors; the capture logs them raw.
var (
	ErrTruncated = errors.New("packet: truncated packet")
	ErrVersion   = errors.New("packet: not an IPv4 or IPv6 packet")
)

// IsTCP reports whether the packet is a TCP segment.
func (p *Packet) IsTCP() bool { return p.Proto == ProtoTCP }

// Port returns the peer-side port: the destination port of an inbound packet,
// the source port of an outbound one.
func (p *Packet) Port() uint16 {
	if p.Dir == Out {
		return p.SrcPort
	}
	return p.DstPort
}

// Parse classifies the raw IP packet b travelling in direction dir into p.
// It never allocates and never panics on arbitrary input.
func Parse(dir Direction, b []byte, p *Packet) error {
	return ParsePrefix(dir, b, len(b), p)
}

// ParsePrefix is Parse for a packet of size bytes of which only the leading
// bytes b are at hand (enough for the headers); payload lengths come from the
// IP header, capped by size.
func ParsePrefix(dir Direction, b []byte, size int, p *Packet) error {
	*p = Packet{Dir: dir, Len: size}
	if len(b) < 1 {
		return ErrTruncated
	}
	var l4 []byte
	var extra int
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return ErrTruncated
		}
		ihl := int(b[0]&0x0f) * 4
		total := min(int(binary.BigEndian.Uint16(b[2:4])), size)
		if ihl < 20 || total < ihl || len(b) < ihl {
			return ErrTruncated
		}
		if total < len(b) {
			b = b[:total]
		}
		extra = total - len(b) // payload bytes beyond the prefix
		p.Version = 4
		p.Proto = b[9]
		p.Src = netip.AddrFrom4([4]byte(b[12:16]))
		p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
		// Only the first fragment carries the transport header.
		switch frag := binary.BigEndian.Uint16(b[6:8]); {
		case frag&0x1fff != 0:
			p.Fragment = LaterFragment
			return nil
		case frag&0x2000 != 0:
			p.Fragment = FirstFragment
		}
		l4 = b[ihl:]
	case 6:
		if len(b) < 40 {
			return ErrTruncated
		}
		p.Version = 6
		p.Src = netip.AddrFrom16([16]byte(b[8:24]))
		p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
		total := min(40+int(binary.BigEndian.Uint16(b[4:6])), size)
		if total < 40 {
			return ErrTruncated
		}
		if total < len(b) {
			b = b[:total]
		}
		extra = total - len(b)
		next, rest := b[6], b[40:]
		for hops := 0; ; hops++ {
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(rest) < 8 || hops > 8 {
					return ErrTruncated
				}
				n := (int(rest[1]) + 1) * 8
				if len(rest) < n {
					return ErrTruncated
				}
				next, rest = rest[0], rest[n:]
				continue
			case 44: // fragment
				if len(rest) < 8 {
					return ErrTruncated
				}
				frag := binary.BigEndian.Uint16(rest[2:4])
				next, rest = rest[0], rest[8:]
				if frag>>3 != 0 {
					p.Proto = next
					p.Fragment = LaterFragment
					return nil
				}
				if frag&1 != 0 {
					p.Fragment = FirstFragment
				}
				continue
			}
			break
		}
		p.Proto = next
		l4 = rest
	default:
		return ErrVersion
	}
	switch p.Proto {
	case ProtoTCP:
		if len(l4) < 20 {
			return ErrTruncated
		}
		off := int(l4[12]>>4) * 4
		if off < 20 || off > len(l4) {
			return ErrTruncated
		}
		p.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		p.DstPort = binary.BigEndian.Uint16(l4[2:4])
		p.Seq = binary.BigEndian.Uint32(l4[4:8])
		p.Ack = binary.BigEndian.Uint32(l4[8:12])
		p.Flags = l4[13]
		p.Window = binary.BigEndian.Uint16(l4[14:16])
		p.PayloadLen = len(l4) - off + extra
	case ProtoUDP:
		if len(l4) < 8 {
			return ErrTruncated
		}
		p.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		p.DstPort = binary.BigEndian.Uint16(l4[2:4])
		p.PayloadLen = len(l4) - 8 + extra
	}
	return nil
}
