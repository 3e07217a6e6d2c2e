package fault

import (
	"encoding/binary"
	"net/netip"
)

// tcp4 builds an IPv4 TCP segment from 198.18.0.1:sport to 198.18.0.2:dport.
func tcp4(sport, dport uint16, flags uint8, seq uint32, payload int) []byte {
	b := make([]byte, 40+payload)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = 64
	b[9] = ProtoTCP
	copy(b[12:], netip.MustParseAddr("198.18.0.1").AsSlice())
	copy(b[16:], netip.MustParseAddr("198.18.0.2").AsSlice())
	t := b[20:]
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dport)
	binary.BigEndian.PutUint32(t[4:], seq)
	t[12] = 5 << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], 65535)
	return b
}

// tcp6 builds an IPv6 TCP segment with one destination-options extension header.
func tcp6(sport, dport uint16, flags uint8, payload int) []byte {
	b := make([]byte, 40+8+20+payload)
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
	b[6] = 60 // destination options
	b[7] = 64
	copy(b[8:], netip.MustParseAddr("fd00:198:18::1").AsSlice())
	copy(b[24:], netip.MustParseAddr("fd00:198:18::2").AsSlice())
	b[40] = ProtoTCP // next header after the option header
	t := b[48:]
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dport)
	t[12] = 5 << 4
	t[13] = flags
	return b
}
