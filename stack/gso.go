package stack

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/unplug-dev/unplug/tun"
)

// gsoMaxSize is the largest TCP packet the peer's netstack builds on an
// offload device: IPv4's 64 KiB limit on a whole packet. gVisor keeps its
// payload below it with room for the largest headers.
const gsoMaxSize = tun.MaxOffloadSize

// gsoEndpoint is the NIC's endpoint on an offload device, above the fault
// layer. It lets the netstack's TCP send super-packets of up to 64 KiB
// (host GSO: one header, many segments' payload, a partial checksum), so
// that TCP's per-segment work is done once per 64 KiB, and cuts each into
// the MSS-sized segments a sender without offload would have put on the
// wire before the fault layer sees them: rules, the flow tracker, captures
// and reports judge and record real wire segments. The segments share the
// super-packet's payload (no copy); each has its own header.
//
// Checksums: a segment's TCP checksum is left to the kernel (the packet is
// marked GSOOptions.NeedsCsum with type GSONone, which the device link
// writes with NEEDS_CSUM, merging runs of them into one super-packet
// again), unless checksums is set: then every segment carries its complete
// checksum, for an observer that records packets as a wire carries them.
// The mark stays either way; the fault layer completes the checksum of a
// copy it corrupts.
//
// Packets towards the peer pass through untouched (the link cuts the
// kernel's super-packets on the way in).
type gsoEndpoint struct {
	nested.Endpoint
	checksums bool
	stats     *offloadCounters // sentSuper, sentSegments
}

var _ gstack.LinkEndpoint = (*gsoEndpoint)(nil)
var _ gstack.GSOEndpoint = (*gsoEndpoint)(nil)

// newGSOEndpoint wraps lower (the fault layer, or what wraps it).
func newGSOEndpoint(lower gstack.LinkEndpoint, checksums bool, stats *offloadCounters) *gsoEndpoint {
	e := &gsoEndpoint{checksums: checksums, stats: stats}
	e.Init(lower, e)
	return e
}

// GSOMaxSize implements stack.GSOEndpoint.
func (*gsoEndpoint) GSOMaxSize() uint32 { return gsoMaxSize }

// SupportedGSO implements stack.GSOEndpoint: the netstack hands over
// super-packets with partial checksums, as to a host NIC with TSO.
func (*gsoEndpoint) SupportedGSO() gstack.SupportedGSO { return gstack.HostGSOSupported }

// WritePackets implements stack.LinkEndpoint: it cuts every TCP
// super-packet into wire segments and hands the list on.
func (e *gsoEndpoint) WritePackets(pkts gstack.PacketBufferList) (int, tcpip.Error) {
	all := pkts.AsSlice()
	cut := false
	for _, pkt := range all {
		if isHostGSO(pkt) {
			cut = true
			break
		}
	}
	if !cut {
		return e.Endpoint.WritePackets(pkts)
	}
	var out gstack.PacketBufferList
	var owned []*gstack.PacketBuffer
	for _, pkt := range all {
		if !isHostGSO(pkt) {
			out.PushBack(pkt)
			continue
		}
		start := len(owned)
		owned = e.segments(pkt, owned)
		if len(owned) == start {
			// One segment (or headers this layer cannot cut): the packet
			// itself goes, marked as a plain segment.
			e.plain(pkt)
			out.PushBack(pkt)
			continue
		}
		e.stats.sentSuper.Add(1)
		e.stats.sentSegments.Add(uint64(len(owned) - start))
		for _, s := range owned[start:] {
			out.PushBack(s)
		}
	}
	_, err := e.Endpoint.WritePackets(out)
	for _, s := range owned {
		s.DecRef()
	}
	if err != nil {
		return 0, err
	}
	return len(all), nil
}

// isHostGSO reports whether pkt is one of the netstack's TCP packets with
// host GSO options (every packet of a TCP endpoint on this NIC, a pure ACK
// included).
func isHostGSO(pkt *gstack.PacketBuffer) bool {
	t := pkt.GSOOptions.Type
	return t == gstack.GSOTCPv4 || t == gstack.GSOTCPv6
}

// plainGSO marks a wire-sized TCP segment whose checksum the kernel may
// finish.
func plainGSO(l3 int) gstack.GSO {
	return gstack.GSO{NeedsCsum: true, CsumOffset: header.TCPChecksumOffset, L3HdrLen: uint16(l3)}
}

// plain turns a super-packet of one segment into that segment: the same
// packet, completed checksum if asked, marked as a plain segment.
func (e *gsoEndpoint) plain(pkt *gstack.PacketBuffer) {
	l3 := len(pkt.NetworkHeader().Slice())
	pkt.GSOOptions = plainGSO(l3)
	th := pkt.TransportHeader().Slice()
	if !e.checksums || len(th) < header.TCPMinimumSize {
		return
	}
	// The field holds the pseudo-header sum (with the length) gVisor
	// left for the kernel.
	sum := binary.BigEndian.Uint16(th[header.TCPChecksumOffset:])
	th[header.TCPChecksumOffset], th[header.TCPChecksumOffset+1] = 0, 0
	sum = checksum.Checksum(th, sum)
	sum = checksum.Combine(sum, pkt.Data().Checksum())
	binary.BigEndian.PutUint16(th[header.TCPChecksumOffset:], ^sum)
}

// segments appends to owned the wire segments of the super-packet pkt,
// each with one reference the caller owns; nothing when pkt holds at most
// one segment or cannot be cut.
func (e *gsoEndpoint) segments(pkt *gstack.PacketBuffer, owned []*gstack.PacketBuffer) []*gstack.PacketBuffer {
	mss := int(pkt.GSOOptions.MSS)
	size := pkt.Data().Size()
	if mss == 0 || size <= mss {
		return owned
	}
	var hdrBuf, scratch [256]byte
	nh, th := pkt.NetworkHeader().Slice(), pkt.TransportHeader().Slice()
	if len(nh)+len(th) > len(hdrBuf) {
		return owned
	}
	hdr := append(append(hdrBuf[:0], nh...), th...)
	g := tun.GSO{Type: tun.GSOTCPv4, Size: uint16(mss), NeedsCsum: true, CsumStart: uint16(len(nh)), CsumOffset: header.TCPChecksumOffset}
	if pkt.GSOOptions.Type == gstack.GSOTCPv6 {
		g.Type = tun.GSOTCPv6
	}
	// The segments' headers are built first, into one chunk that their
	// packets share (read-only from here on: the fault layer and the device
	// copy a header before changing it).
	type cut struct{ off, len int }
	var cutsBuf [64]cut
	cuts := cutsBuf[:0]
	var headsBuf [64 * 80]byte
	heads := headsBuf[:0]
	err := tun.SplitTCPHeaders(hdr, size, g, scratch[:], func(s tun.TCPSegment) error {
		cuts = append(cuts, cut{s.Off, s.Len})
		heads = append(heads, s.Header...)
		return nil
	})
	if err != nil {
		return owned
	}
	hl := len(hdr)
	data := pkt.Data().ToBuffer()
	defer data.Release()
	if e.checksums {
		for i, c := range cuts {
			tcp := heads[i*hl+len(nh) : (i+1)*hl]
			partial := binary.BigEndian.Uint16(tcp[header.TCPChecksumOffset:])
			tcp[header.TCPChecksumOffset], tcp[header.TCPChecksumOffset+1] = 0, 0
			sum, at := checksum.Checksum(tcp, partial), 0
			data.SubApply(c.off, c.len, func(v *buffer.View) {
				sum = checksumAt(sum, at, v.AsSlice())
				at += v.Size()
			})
			binary.BigEndian.PutUint16(tcp[header.TCPChecksumOffset:], ^sum)
		}
	}
	headView := buffer.NewViewWithData(heads)
	defer headView.Release()
	views := data.AsViewList()
	v, vstart := views.Front(), 0 // the view holding the next payload byte, and its offset
	for i, c := range cuts {
		var b buffer.Buffer
		for left, off := c.len, c.off; left > 0 && v != nil; {
			if off >= vstart+v.Size() {
				vstart += v.Size()
				v = v.Next()
				continue
			}
			piece := v.Clone()
			piece.TrimFront(off - vstart)
			n := min(left, piece.Size())
			piece.CapLength(n)
			b.Append(piece)
			off += n
			left -= n
		}
		h := headView.Clone()
		h.TrimFront(i * hl)
		h.CapLength(hl)
		b.Prepend(h)
		seg := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: b})
		seg.NetworkProtocolNumber = pkt.NetworkProtocolNumber
		seg.TransportProtocolNumber = header.TCPProtocolNumber
		seg.GSOOptions = plainGSO(len(nh))
		seg.Owner = pkt.Owner
		owned = append(owned, seg)
	}
	return owned
}

// checksumAt adds b, which starts at byte offset off of the data being
// summed, to the running one's complement sum.
func checksumAt(sum uint16, off int, b []byte) uint16 {
	s := checksum.Checksum(b, 0)
	if off%2 == 1 {
		s = s<<8 | s>>8 // an odd offset swaps the bytes' places in the sum
	}
	return checksum.Combine(sum, s)
}
