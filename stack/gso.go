package stack

import (
	"encoding/binary"
	"sync"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/unplug-dev/unplug/stack/fault"
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
	stats     *offloadCounters // sentSuper, sentSegments, sentCut
	cuts      sync.Pool        // *superCut, reused (several KiB each)
}

var _ gstack.LinkEndpoint = (*gsoEndpoint)(nil)
var _ gstack.GSOEndpoint = (*gsoEndpoint)(nil)

// newGSOEndpoint wraps lower (the fault layer, or what wraps it).
func newGSOEndpoint(lower gstack.LinkEndpoint, checksums bool, stats *offloadCounters) *gsoEndpoint {
	e := &gsoEndpoint{checksums: checksums, stats: stats}
	e.cuts.New = func() any { return &superCut{stats: stats} }
	e.Init(lower, e)
	return e
}

// GSOMaxSize implements stack.GSOEndpoint.
func (*gsoEndpoint) GSOMaxSize() uint32 { return gsoMaxSize }

// SupportedGSO implements stack.GSOEndpoint: the netstack hands over
// super-packets with partial checksums, as to a host NIC with TSO.
func (*gsoEndpoint) SupportedGSO() gstack.SupportedGSO { return gstack.HostGSOSupported }

// superWriter is the fault layer's super-packet path (fault.Endpoint).
type superWriter interface {
	WriteSuper(s *fault.Super) tcpip.Error
}

// WritePackets implements stack.LinkEndpoint: it cuts every TCP
// super-packet into wire segments and hands them on: to the fault
// layer's super-packet path, which judges them from their headers and
// passes the super-packet on whole when all of them pass, or as a list of
// segment packets.
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
	sw, _ := e.Endpoint.Child().(superWriter)
	var out gstack.PacketBufferList
	var owned []*gstack.PacketBuffer
	var err tcpip.Error
	flush := func() {
		if out.Len() > 0 {
			if _, werr := e.Endpoint.WritePackets(out); werr != nil && err == nil {
				err = werr
			}
			out = gstack.PacketBufferList{} // not Reset: the caller owns these references
		}
	}
	for _, pkt := range all {
		if !isHostGSO(pkt) {
			out.PushBack(pkt)
			continue
		}
		c := e.cuts.Get().(*superCut)
		if !c.init(pkt, e.checksums) {
			e.cuts.Put(c)
			// One segment (or headers this layer cannot cut): the packet
			// itself goes, marked as a plain segment.
			e.plain(pkt)
			out.PushBack(pkt)
			continue
		}
		e.stats.sentSuper.Add(1)
		e.stats.sentSegments.Add(uint64(c.count))
		if sw != nil {
			flush()
			if werr := sw.WriteSuper(c.super()); werr != nil && err == nil {
				err = werr
			}
		} else {
			for i := range c.count {
				seg := c.segment(i)
				owned = append(owned, seg)
				out.PushBack(seg)
			}
		}
		c.release()
		e.cuts.Put(c)
	}
	flush()
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

// superCut is a super-packet to be cut into wire segments: their
// headers, built on demand (cut) into one buffer (with complete checksums
// if asked), and their packets, built on demand sharing the headers'
// chunk and the super-packet's payload.
type superCut struct {
	stats     *offloadCounters // sentCut
	pkt       *gstack.PacketBuffer
	gso       tun.GSO
	checksums bool
	nh, hl    int // network header length; both headers' length
	size      int // payload bytes
	count     int // segments
	cuts      []segCut
	heads     []byte // hl bytes per segment
	data      buffer.Buffer
	headView  *buffer.View // heads as a view, once a segment packet needs it
	f         fault.Super

	cutsBuf   [64]segCut
	headsBuf  [64 * 80]byte
	hdrBuf    [256]byte
	scratch   [256]byte
	headsList [64][]byte
	lensBuf   [64]int
}

// segCut locates a segment's payload in the super-packet's.
type segCut struct{ off, len int }

// init readies pkt to be cut, counting its segments; false when it holds
// at most one segment or cannot be cut.
func (c *superCut) init(pkt *gstack.PacketBuffer, checksums bool) bool {
	mss := int(pkt.GSOOptions.MSS)
	size := pkt.Data().Size()
	if mss == 0 || size <= mss {
		return false
	}
	nh, th := pkt.NetworkHeader().Slice(), pkt.TransportHeader().Slice()
	if len(nh)+len(th) > len(c.hdrBuf) {
		return false
	}
	hdr := append(append(c.hdrBuf[:0], nh...), th...)
	g := tun.GSO{Type: tun.GSOTCPv4, Size: uint16(mss), NeedsCsum: true, CsumStart: uint16(len(nh)), CsumOffset: header.TCPChecksumOffset}
	if pkt.GSOOptions.Type == gstack.GSOTCPv6 {
		g.Type = tun.GSOTCPv6
	}
	count, err := tun.SegmentCountHeaders(hdr, size, g, c.scratch[:])
	if err != nil {
		return false
	}
	c.pkt, c.gso, c.checksums = pkt, g, checksums
	c.nh, c.hl, c.size, c.count = len(nh), len(hdr), size, count
	return true
}

// cut builds the segments' headers, once.
func (c *superCut) cut() {
	if c.cuts != nil {
		return
	}
	c.stats.sentCut.Add(1)
	c.cuts, c.heads = c.cutsBuf[:0], c.headsBuf[:0]
	// init counted the segments with the same cutter: this cannot fail.
	tun.SplitTCPHeaders(c.hdrBuf[:c.hl], c.size, c.gso, c.scratch[:], func(s tun.TCPSegment) error {
		c.cuts = append(c.cuts, segCut{s.Off, s.Len})
		c.heads = append(c.heads, s.Header...)
		return nil
	})
	c.data = c.pkt.Data().ToBuffer()
	if c.checksums {
		for i, sc := range c.cuts {
			tcp := c.heads[i*c.hl+c.nh : (i+1)*c.hl]
			partial := binary.BigEndian.Uint16(tcp[header.TCPChecksumOffset:])
			tcp[header.TCPChecksumOffset], tcp[header.TCPChecksumOffset+1] = 0, 0
			sum, at := checksum.Checksum(tcp, partial), 0
			c.data.SubApply(sc.off, sc.len, func(v *buffer.View) {
				sum = checksumAt(sum, at, v.AsSlice())
				at += v.Size()
			})
			binary.BigEndian.PutUint16(tcp[header.TCPChecksumOffset:], ^sum)
		}
	}
	f := &c.f.HeaderForm
	f.Heads, f.Lens = c.headsList[:0], c.lensBuf[:0]
	for i, sc := range c.cuts {
		f.Heads = append(f.Heads, c.heads[i*c.hl:(i+1)*c.hl])
		f.Lens = append(f.Lens, c.hl+sc.len)
	}
}

// super describes c for the fault layer, in lazy header form.
func (c *superCut) super() *fault.Super {
	c.f = fault.Super{Packet: c.pkt, Segment: c.segment}
	c.f.Head, c.f.Len, c.f.Count, c.f.Cut = c.hdrBuf[:c.hl], c.hl+c.size, c.count, c.cut
	return &c.f
}

// segment builds segment i as a packet with one reference the caller
// owns: its header a view of the shared headers' chunk (read-only from
// here on: the fault layer and the device copy a header before changing
// it), its payload views of the super-packet's.
func (c *superCut) segment(i int) *gstack.PacketBuffer {
	c.cut()
	if c.headView == nil {
		c.headView = buffer.NewViewWithData(c.heads)
	}
	sc := c.cuts[i]
	var b buffer.Buffer
	views := c.data.AsViewList()
	start := 0
	for v := views.Front(); v != nil && start < sc.off+sc.len; v = v.Next() {
		end := start + v.Size()
		if end > sc.off {
			piece := v.Clone()
			from := max(sc.off-start, 0)
			piece.TrimFront(from)
			piece.CapLength(min(end, sc.off+sc.len) - start - from)
			b.Append(piece)
		}
		start = end
	}
	h := c.headView.Clone()
	h.TrimFront(i * c.hl)
	h.CapLength(c.hl)
	b.Prepend(h)
	seg := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: b})
	seg.NetworkProtocolNumber = c.pkt.NetworkProtocolNumber
	seg.TransportProtocolNumber = header.TCPProtocolNumber
	seg.GSOOptions = plainGSO(c.nh)
	seg.Owner = c.pkt.Owner
	return seg
}

// release drops what c holds of the super-packet, readying it for reuse.
func (c *superCut) release() {
	c.data.Release()
	if c.headView != nil {
		c.headView.Release()
		c.headView = nil
	}
	clear(c.headsList[:])
	c.pkt, c.f, c.cuts = nil, fault.Super{}, nil
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
