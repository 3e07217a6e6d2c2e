package packet

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// tcp4 builds an IPv4 TCP segment with n payload bytes (checksums left zero:
// Parse does not read them).
func tcp4(src, dst string, sport, dport uint16, flags uint8, seq uint32, n int) []byte {
	b := make([]byte, 40+n)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
	b[8], b[9] = 64, ProtoTCP
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[20:22], sport)
	binary.BigEndian.PutUint16(b[22:24], dport)
	binary.BigEndian.PutUint32(b[24:28], seq)
	b[32] = 5 << 4
	b[33] = flags
	binary.BigEndian.PutUint16(b[34:36], 65535)
	return b
}

func TestParse(t *testing.T) {
	seg := tcp4("198.18.0.1", "198.18.0.2", 40000, 80, FlagPSH|FlagACK, 7, 100)
	frag := tcp4("198.18.0.1", "198.18.0.2", 40000, 80, FlagACK, 7, 100)
	binary.BigEndian.PutUint16(frag[6:8], 0x2000) // more fragments, offset 0
	later := tcp4("198.18.0.1", "198.18.0.2", 40000, 80, FlagACK, 7, 100)
	binary.BigEndian.PutUint16(later[6:8], 0x0010) // offset 128 bytes
	tests := []struct {
		name    string
		b       []byte
		size    int // 0: len(b)
		want    Packet
		wantErr error
	}{
		{"tcp4", seg, 0, Packet{Dir: In, Version: 4, Proto: ProtoTCP,
			Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2"),
			SrcPort: 40000, DstPort: 80, Flags: FlagPSH | FlagACK, Seq: 7, Window: 65535, PayloadLen: 100, Len: 140}, nil},
		{"headers only", seg[:40], 140, Packet{Dir: In, Version: 4, Proto: ProtoTCP,
			Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2"),
			SrcPort: 40000, DstPort: 80, Flags: FlagPSH | FlagACK, Seq: 7, Window: 65535, PayloadLen: 100, Len: 140}, nil},
		{"first fragment", frag, 0, Packet{Dir: In, Version: 4, Proto: ProtoTCP,
			Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2"),
			SrcPort: 40000, DstPort: 80, Flags: FlagACK, Seq: 7, Window: 65535, PayloadLen: 100, Len: 140, Fragment: FirstFragment}, nil},
		{"later fragment", later, 0, Packet{Dir: In, Version: 4, Proto: ProtoTCP,
			Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2"), Len: 140, Fragment: LaterFragment}, nil},
		{"empty", nil, 0, Packet{Dir: In}, ErrTruncated},
		{"short ipv4", seg[:19], 0, Packet{Dir: In, Len: 19}, ErrTruncated},
		{"version 5", []byte{0x50}, 0, Packet{Dir: In, Len: 1}, ErrVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			size := tt.size
			if size == 0 {
				size = len(tt.b)
			}
			var p Packet
			err := ParsePrefix(In, tt.b, size, &p)
			if err != tt.wantErr {
				t.Fatalf("ParsePrefix error = %v, want %v", err, tt.wantErr)
			}
			if err == nil && p != tt.want {
				t.Errorf("ParsePrefix = %+v\nwant %+v", p, tt.want)
			}
		})
	}
}

func TestPort(t *testing.T) {
	p := Packet{Dir: In, SrcPort: 40000, DstPort: 80}
	if p.Port() != 80 {
		t.Errorf("inbound Port() = %d, want the destination 80", p.Port())
	}
	p.Dir, p.SrcPort, p.DstPort = Out, 80, 40000
	if p.Port() != 80 {
		t.Errorf("outbound Port() = %d, want the source 80", p.Port())
	}
}
