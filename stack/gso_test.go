package stack

import (
	"bytes"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// tcpChecksumOK verifies the TCP checksum of the IPv4 or IPv6 (no
// extension headers) segment b.
func tcpChecksumOK(b []byte) bool {
	var off int
	var sum uint16
	switch b[0] >> 4 {
	case 4:
		off = int(b[0]&0xf) * 4
		sum = checksum.Checksum(b[12:20], 0)
	case 6:
		off = 40
		sum = checksum.Checksum(b[8:40], 0)
	default:
		return false
	}
	sum = checksum.Combine(sum, 6)
	sum = checksum.Combine(sum, uint16(len(b)-off))
	return checksum.Checksum(b[off:], sum) == 0xffff
}

// gsoPacket builds a TCP/IPv4 super-packet as gVisor's TCP hands it to a
// host-GSO endpoint: headers in the reserved space, the payload in views
// of the given sizes, the pseudo-header sum in the checksum field.
func gsoPacket(t *testing.T, mss int, views []int) (*gstack.PacketBuffer, []byte) {
	t.Helper()
	var payload buffer.Buffer
	var all []byte
	for i, n := range views {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(i*31 + j*7)
		}
		all = append(all, b...)
		// A second reference keeps Append from copying the next view
		// into this one's chunk: the payload stays in views of these
		// sizes.
		v := buffer.NewViewWithData(b)
		keep := v.Clone()
		t.Cleanup(keep.Release)
		payload.Append(v)
	}
	if vl := payload.AsViewList(); vl.Len() != len(views) {
		got := vl.Len()
		t.Fatalf("payload in %d views, want %d", got, len(views))
	}
	pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{ReserveHeaderBytes: 40, Payload: payload})
	tcp := header.TCP(pkt.TransportHeader().Push(header.TCPMinimumSize))
	tcp.Encode(&header.TCPFields{SrcPort: 7, DstPort: 40000, SeqNum: 1000, AckNum: 5, DataOffset: 20,
		Flags: header.TCPFlagAck | header.TCPFlagPsh, WindowSize: 1000})
	src, dst := tcpip.AddrFrom4([4]byte{198, 18, 0, 2}), tcpip.AddrFrom4([4]byte{198, 18, 0, 1})
	ip := header.IPv4(pkt.NetworkHeader().Push(header.IPv4MinimumSize))
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(pkt.Size()), ID: 9, Flags: header.IPv4FlagDontFragment,
		TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dst})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp.SetChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(20+len(all))))
	pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	pkt.GSOOptions = gstack.GSO{Type: gstack.GSOTCPv4, NeedsCsum: true, CsumOffset: 16, MSS: uint16(mss), L3HdrLen: 20, MaxSize: gsoMaxSize}
	return pkt, all
}

// TestGSOSegments cuts super-packets whose payload views end at odd
// offsets inside segments: every segment is at most MSS long, carries the
// next bytes and sequence number, PSH only on the last, a valid IPv4
// header checksum and (with checksums) a valid TCP checksum, and the
// payload comes out exactly.
func TestGSOSegments(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mss       int
		views     []int
		checksums bool
	}{
		{"one view, complete checksums", 1448, []int{45 * 1448}, true},
		{"odd views, complete checksums", 1000, []int{1001, 3, 5000, 777, 1, 2219}, true},
		{"odd views, partial checksums", 1000, []int{1001, 3, 5000, 777, 1, 2219}, false},
		{"short tail", 1448, []int{3*1448 + 17}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt, want := gsoPacket(t, tc.mss, tc.views)
			defer pkt.DecRef()
			c := superCut{stats: new(offloadCounters)}
			if !c.init(pkt, tc.checksums) {
				t.Fatal("the super-packet was not cut")
			}
			var segs []*gstack.PacketBuffer
			for i := range c.count {
				segs = append(segs, c.segment(i))
			}
			defer func() {
				for _, s := range segs {
					s.DecRef()
				}
				c.release()
			}()
			if n := (len(want) + tc.mss - 1) / tc.mss; len(segs) != n {
				t.Fatalf("%d segments, want %d", len(segs), n)
			}
			var got []byte
			seq := uint32(1000)
			for i, s := range segs {
				b := flattenPacket(s)
				ip, tcp := header.IPv4(b), header.TCP(b[20:])
				last := i == len(segs)-1
				switch {
				case len(b)-40 > tc.mss || !last && len(b)-40 != tc.mss:
					t.Fatalf("segment %d: %d bytes of payload, MSS %d", i, len(b)-40, tc.mss)
				case int(ip.TotalLength()) != len(b) || !ip.IsChecksumValid():
					t.Fatalf("segment %d: IPv4 length %d of %d bytes, checksum valid %v", i, ip.TotalLength(), len(b), ip.IsChecksumValid())
				case tcp.SequenceNumber() != seq:
					t.Fatalf("segment %d: seq %d, want %d", i, tcp.SequenceNumber(), seq)
				case (tcp.Flags()&header.TCPFlagPsh != 0) != last:
					t.Fatalf("segment %d of %d: flags %v", i, len(segs), tcp.Flags())
				case tc.checksums && !tcpChecksumOK(b):
					t.Fatalf("segment %d: bad TCP checksum %#04x", i, tcp.Checksum())
				case s.GSOOptions.Type != gstack.GSONone || !s.GSOOptions.NeedsCsum:
					t.Fatalf("segment %d: GSO options %+v, want a plain segment the kernel may checksum", i, s.GSOOptions)
				}
				if !tc.checksums {
					// The pseudo-header sum with this segment's length.
					src, dst := ip.SourceAddress(), ip.DestinationAddress()
					if sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(b)-20)); tcp.Checksum() != sum {
						t.Fatalf("segment %d: checksum field %#04x, want the pseudo-header sum %#04x", i, tcp.Checksum(), sum)
					}
				}
				seq += uint32(len(b) - 40)
				got = append(got, b[40:]...)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("the segments' payload differs from the super-packet's")
			}
		})
	}
}

// flattenPacket returns the whole packet as one slice.
func flattenPacket(pkt *gstack.PacketBuffer) []byte {
	var b []byte
	for _, s := range pkt.AsSlices() {
		b = append(b, s...)
	}
	return b
}
