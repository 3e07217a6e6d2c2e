package tun

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// tcpOpts are the options of the test segments: NOP, NOP, timestamps.
var tcpOpts = []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}

// buildTCP returns an IPv4 or IPv6 TCP packet with payload, flags and seq,
// its checksums valid, or (partial) with the TCP checksum holding only the
// pseudo-header sum, as the kernel hands out packets with NEEDS_CSUM.
func buildTCP(v6 bool, seq uint32, flags uint8, id uint16, payload []byte, partial bool) []byte {
	ipLen := header.IPv4MinimumSize
	if v6 {
		ipLen = header.IPv6MinimumSize
	}
	tcpLen := header.TCPMinimumSize + len(tcpOpts)
	p := make([]byte, ipLen+tcpLen+len(payload))
	var src, dst tcpip.Address
	if v6 {
		src = tcpip.AddrFrom16([16]byte{0xfd, 0, 1, 0x98, 0, 0x18, 15: 1})
		dst = tcpip.AddrFrom16([16]byte{0xfd, 0, 1, 0x98, 0, 0x18, 15: 2})
		header.IPv6(p).Encode(&header.IPv6Fields{
			PayloadLength: uint16(tcpLen + len(payload)), TransportProtocol: header.TCPProtocolNumber,
			HopLimit: 64, SrcAddr: src, DstAddr: dst,
		})
	} else {
		src = tcpip.AddrFrom4([4]byte{198, 18, 0, 1})
		dst = tcpip.AddrFrom4([4]byte{198, 18, 0, 2})
		ip := header.IPv4(p)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(len(p)), ID: id, Flags: header.IPv4FlagDontFragment, TTL: 64,
			Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dst,
		})
		ip.SetChecksum(^ip.CalculateChecksum())
	}
	tcp := header.TCP(p[ipLen:])
	tcp.Encode(&header.TCPFields{
		SrcPort: 40000, DstPort: 9, SeqNum: seq, AckNum: 77, DataOffset: uint8(tcpLen),
		Flags: header.TCPFlags(flags), WindowSize: 512,
	})
	copy(tcp[header.TCPMinimumSize:], tcpOpts)
	copy(p[ipLen+tcpLen:], payload)
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tcpLen+len(payload)))
	if partial {
		tcp.SetChecksum(sum)
	} else {
		tcp.SetChecksum(^checksum.Checksum(tcp, sum))
	}
	return p
}

// checkValid fails unless p's IP header and TCP checksums are right.
func checkValid(t *testing.T, p []byte) {
	t.Helper()
	var src, dst tcpip.Address
	var tcp header.TCP
	if p[0]>>4 == 4 {
		ip := header.IPv4(p)
		if !ip.IsValid(len(p)) || int(ip.TotalLength()) != len(p) || !ip.IsChecksumValid() {
			t.Fatalf("invalid IPv4 header: % x", p[:20])
		}
		src, dst, tcp = ip.SourceAddress(), ip.DestinationAddress(), header.TCP(p[20:])
	} else {
		ip := header.IPv6(p)
		if int(ip.PayloadLength())+40 != len(p) {
			t.Fatalf("IPv6 payload length %d for %d bytes", ip.PayloadLength(), len(p))
		}
		src, dst, tcp = ip.SourceAddress(), ip.DestinationAddress(), header.TCP(p[40:])
	}
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(tcp)))
	if checksum.Checksum(tcp, sum) != 0xffff {
		t.Fatalf("bad TCP checksum %#04x", tcp.Checksum())
	}
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// TestSplitTCP cuts super-packets as the kernel hands them out (partial
// checksum) and checks every segment against the one a sender without
// offload would have built.
func TestSplitTCP(t *testing.T) {
	const mss = 1448
	tests := []struct {
		name    string
		v6      bool
		size    int
		flags   uint8
		wantSeg int
	}{
		{"v4 exact multiple", false, 4 * mss, tcpACK | tcpPSH, 4},
		{"v4 short tail with FIN", false, 3*mss + 100, tcpACK | tcpPSH | tcpFIN, 4},
		{"v4 one segment", false, 10, tcpACK, 1},
		{"v4 64 KiB with CWR", false, 65535 - 52, tcpACK | tcpCWR, 46},
		{"v6 short tail", true, 2*mss + 1, tcpACK | tcpPSH, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload := pattern(tt.size)
			super := buildTCP(tt.v6, 1000, tt.flags, 500, payload, true)
			ipLen := 20
			g := GSO{Type: GSOTCPv4, Size: mss, NeedsCsum: true, CsumStart: 20, CsumOffset: 16}
			if tt.v6 {
				ipLen, g.Type, g.CsumStart = 40, GSOTCPv6, 40
			}
			var got [][]byte
			var scratch [maxHeaderLen]byte
			err := SplitTCP(super, g, scratch[:], true, func(s TCPSegment) error {
				got = append(got, s.Segment(nil, super))
				return nil
			})
			if err != nil {
				t.Fatalf("SplitTCP: %v", err)
			}
			if len(got) != tt.wantSeg {
				t.Fatalf("got %d segments, want %d", len(got), tt.wantSeg)
			}
			hdrLen := ipLen + int(super[ipLen+12]>>4)*4
			if n, err := SegmentCount(super, g, scratch[:]); err != nil || n != tt.wantSeg {
				t.Errorf("SegmentCount = %d, %v; want %d", n, err, tt.wantSeg)
			}
			if n, err := SegmentCountHeaders(super[:hdrLen], tt.size, g, scratch[:]); err != nil || n != tt.wantSeg {
				t.Errorf("SegmentCountHeaders = %d, %v; want %d", n, err, tt.wantSeg)
			}
			for i, seg := range got {
				off := i * mss
				n := min(mss, tt.size-off)
				f := tt.flags
				if i < len(got)-1 {
					f &^= tcpFIN | tcpPSH
				}
				if i > 0 {
					f &^= tcpCWR
				}
				want := buildTCP(tt.v6, 1000+uint32(off), f, 500+uint16(i), payload[off:off+n], false)
				checkValid(t, seg)
				if !bytes.Equal(seg, want) {
					t.Fatalf("segment %d:\n got % x\nwant % x", i, seg[:ipLen+32], want[:ipLen+32])
				}
			}
		})
	}
}

func TestSplitTCPMalformed(t *testing.T) {
	super := buildTCP(false, 1, tcpACK, 1, pattern(3000), true)
	var scratch [maxHeaderLen]byte
	for _, tt := range []struct {
		name string
		pkt  []byte
		g    GSO
	}{
		{"zero segment size", super, GSO{Type: GSOTCPv4}},
		{"truncated", super[:30], GSO{Type: GSOTCPv4, Size: 1000}},
		{"not IP", append([]byte{0x10}, super[1:]...), GSO{Type: GSOTCPv4, Size: 1000}},
		{"checksum start past the end", super[:100], GSO{Type: GSOTCPv4, Size: 1000, NeedsCsum: true, CsumStart: 90, CsumOffset: 16}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			err := SplitTCP(tt.pkt, tt.g, scratch[:], true, func(TCPSegment) error { calls++; return nil })
			if err == nil || calls != 0 {
				t.Fatalf("SplitTCP = %v after %d segments, want an error and none", err, calls)
			}
			if n, err := SegmentCount(tt.pkt, tt.g, scratch[:]); err == nil {
				t.Errorf("SegmentCount = %d, want an error", n)
			}
		})
	}
}

func TestCompleteChecksum(t *testing.T) {
	p := buildTCP(false, 1, tcpACK|tcpPSH, 1, pattern(333), true)
	if err := CompleteChecksum(p, GSO{NeedsCsum: true, CsumStart: 20, CsumOffset: 16}); err != nil {
		t.Fatal(err)
	}
	checkValid(t, p)
	if err := CompleteChecksum(p[:30], GSO{NeedsCsum: true, CsumStart: 20, CsumOffset: 16}); err == nil {
		t.Error("CompleteChecksum accepted a field past the end")
	}
	before := bytes.Clone(p)
	if err := CompleteChecksum(p, GSO{}); err != nil || !bytes.Equal(p, before) {
		t.Error("CompleteChecksum changed a packet without NEEDS_CSUM")
	}
}

func TestVnetHdrRoundTrip(t *testing.T) {
	g := GSO{Type: GSOTCPv6, Size: 1428, NeedsCsum: true, CsumStart: 40, CsumOffset: 16}
	var b [vnetHdrLen]byte
	putVnetHdr(b[:], g, 72)
	if got := parseVnetHdr(b[:]); got != g {
		t.Fatalf("round trip: got %+v, want %+v", got, g)
	}
	if binary.NativeEndian.Uint16(b[2:]) != 72 {
		t.Fatalf("hdr_len = %d, want 72", binary.NativeEndian.Uint16(b[2:]))
	}
}

// BenchmarkSplitTCP cuts a 64 KiB super-packet into 1448-byte segments with
// full checksums; it must not allocate.
func BenchmarkSplitTCP(b *testing.B) {
	super := buildTCP(false, 1, tcpACK, 1, pattern(65535-52), true)
	g := GSO{Type: GSOTCPv4, Size: 1448, NeedsCsum: true, CsumStart: 20, CsumOffset: 16}
	var scratch [maxHeaderLen]byte
	count := func(TCPSegment) error { return nil }
	b.SetBytes(int64(len(super)))
	b.ReportAllocs()
	for b.Loop() {
		if err := SplitTCP(super, g, scratch[:], true, count); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCoalesce finds and merges a run of 45 segments; it must not
// allocate.
func BenchmarkCoalesce(b *testing.B) {
	segs := segmentsOf(false, 1, 1448, pattern(45*1448), tcpACK, tcpACK|tcpPSH)
	var hdr [maxHeaderLen]byte
	b.ReportAllocs()
	for b.Loop() {
		n := coalescable(segs)
		mergeHeader(hdr[:], segs[:n])
	}
}

// TestHotPathsDoNotAllocate pins what the benchmarks show.
func TestHotPathsDoNotAllocate(t *testing.T) {
	super := buildTCP(false, 1, tcpACK, 1, pattern(20000), true)
	g := GSO{Type: GSOTCPv4, Size: 1448, NeedsCsum: true, CsumStart: 20, CsumOffset: 16}
	segs := segmentsOf(false, 1, 1448, pattern(10*1448), tcpACK, tcpACK)
	var scratch, hdr [maxHeaderLen]byte
	count := func(TCPSegment) error { return nil }
	if a := testing.AllocsPerRun(100, func() { SplitTCP(super, g, scratch[:], true, count) }); a != 0 {
		t.Errorf("SplitTCP: %v allocations per call", a)
	}
	if a := testing.AllocsPerRun(100, func() { mergeHeader(hdr[:], segs[:coalescable(segs)]) }); a != 0 {
		t.Errorf("coalesce: %v allocations per call", a)
	}
}

// TestMergeTCP merges runs of a super-packet's segments and checks each
// against the packet a sender would have sent for that run: the first
// segment's sequence number and IPv4 id, the run's length, FIN and PSH only
// when it ends the super-packet, CWR only when it starts it, and the
// pseudo-header checksum.
func TestMergeTCP(t *testing.T) {
	const mss = 1448
	for _, tt := range []struct {
		v6           bool
		first, count int
	}{
		{false, 0, 5}, {false, 0, 2}, {false, 1, 3}, {false, 3, 2}, {false, 4, 1}, {true, 2, 3}, {true, 0, 5},
	} {
		t.Run(fmt.Sprintf("v6=%v %d+%d", tt.v6, tt.first, tt.count), func(t *testing.T) {
			size := 4*mss + 100
			flags := uint8(tcpACK | tcpPSH | tcpFIN | tcpCWR)
			payload := pattern(size)
			super := buildTCP(tt.v6, 1000, flags, 500, payload, true)
			g := GSO{Type: GSOTCPv4, Size: mss, NeedsCsum: true, CsumStart: 20, CsumOffset: 16}
			if tt.v6 {
				g.Type, g.CsumStart = GSOTCPv6, 40
			}
			if n, err := SegmentCount(super, g, make([]byte, maxHeaderLen)); err != nil || n != 5 {
				t.Fatalf("SegmentCount = %d, %v; want 5", n, err)
			}
			var scratch [maxHeaderLen]byte
			s, err := MergeTCP(super, g, scratch[:], tt.first, tt.count)
			if err != nil {
				t.Fatal(err)
			}
			off := tt.first * mss
			end := min(size, (tt.first+tt.count)*mss)
			f := flags
			if end < size {
				f &^= tcpFIN | tcpPSH
			}
			if tt.first > 0 {
				f &^= tcpCWR
			}
			want := buildTCP(tt.v6, 1000+uint32(off), f, 500+uint16(tt.first), payload[off:end], true)
			if got := s.Segment(nil, super); !bytes.Equal(got, want) {
				t.Errorf("merged run:\n got % x\nwant % x", got[:72], want[:72])
			}
		})
	}
	var scratch [maxHeaderLen]byte
	super := buildTCP(false, 1, tcpACK, 1, pattern(3000), true)
	g := GSO{Type: GSOTCPv4, Size: 1448, NeedsCsum: true, CsumStart: 20, CsumOffset: 16}
	if _, err := MergeTCP(super, g, scratch[:], 3, 1); err == nil {
		t.Error("MergeTCP past the last segment: no error")
	}
}
