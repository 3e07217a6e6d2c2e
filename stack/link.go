package stack

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/unplug-dev/unplug/internal/busypoll"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/tun"
)

// outboundQueue is how many packets the peer may queue towards the device
// before the link drops (like a full NIC ring).
const outboundQueue = 4096

// Write batching: the write loop takes whatever the peer has queued, up to
// maxWriteBatch packets or writeSlab bytes, and hands it to the device at
// once (an offload device merges runs of TCP segments into one write).
const (
	maxWriteBatch = 256
	writeSlab     = 256 << 10
)

// deviceLink is the link endpoint on a tun.Device: a channel endpoint whose
// inbound side is fed by a read loop. Outbound, a sender writes to the
// device itself when nothing is queued or being written (as gVisor's
// fdbased endpoint does; a TUN write does not block) and queues behind
// the others otherwise, for a write loop that drains the queue.
//
// On an offload device (tun.Offload) the read loop receives the kernel's
// TCP super-packets and cuts them into the MSS-sized segments a wire would
// carry, without copying their payload. When its dispatcher (the fault
// layer) takes batches, each super-packet goes up as one fault.Batch: the
// fault layer judges the segments one by one and merges again what passed.
// Packets only ever travel up: the link knows nothing above its
// dispatcher.
type deviceLink struct {
	*channel.Endpoint
	dev     tun.Device
	offload tun.Offload // nil for a plain device
	batcher atomic.Pointer[fault.BatchDispatcher]
	// checksums makes the segments cut from super-packets carry complete
	// TCP checksums, for observers that record them; without it they keep
	// the kernel's partial one (gVisor does not check either).
	checksums bool
	stats     offloadCounters
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	once      sync.Once
	readErr   atomic.Pointer[error] // first read error other than closing
	// queued counts the offload reader's packets handed to the
	// delivering stage and not yet delivered; at 0 the reader delivers
	// an ordinary packet itself.
	queued atomic.Int64

	// out is the outbound queue: WritePackets holds a reference to each
	// packet (no copy) until the write loop has written it. outMu guards
	// closing it against writers.
	out       chan *gstack.PacketBuffer
	outMu     sync.RWMutex
	outClosed bool
	// pending counts packets queued or being written by the write loop;
	// wmu is held while writing and guards the scratch below.
	pending atomic.Int64
	wmu     sync.Mutex
	slab    []byte          // a plain device's packet, flattened
	wout    []tun.OutPacket // an offload device's batch
	wbufs   [][]byte        // the slices of its packets
}

// Attach implements stack.LinkEndpoint: it notes whether the dispatcher
// takes batches.
func (l *deviceLink) Attach(d gstack.NetworkDispatcher) {
	if bd, ok := d.(fault.BatchDispatcher); ok {
		l.batcher.Store(&bd)
	} else {
		l.batcher.Store(nil)
	}
	l.Endpoint.Attach(d)
}

// offloadCounters are the link's OffloadStats.
type offloadCounters struct {
	superPackets, segments, outPackets, outWrites atomic.Uint64
	cut, segmentPackets                           atomic.Uint64
	sentSuper, sentSegments, sentCut              atomic.Uint64 // counted by gsoEndpoint
	// inline counts ordinary packets the offload reader delivered itself.
	inline atomic.Uint64
}

// OffloadStats counts the work of the link on an offload device (all zero
// on a plain one): the kernel's TCP super-packets, the wire-sized segments
// the fault layer judged, how they went up to TCP, and how many writes the
// peer's packets took.
type OffloadStats struct {
	// SuperPackets are TCP super-packets read from the device; Segments
	// the MSS-sized segments they carry, for the fault layer. Cut counts
	// the super-packets cut into their segments' headers, to be judged
	// one by one: those of a connection some rule concerns, or all of
	// them for an observer. The others went up whole, unjudged.
	SuperPackets uint64 `json:"super_packets"`
	Segments     uint64 `json:"segments"`
	Cut          uint64 `json:"cut"`
	// SegmentPackets counts the segments built as packets of their own:
	// for an observer recording them, or because not all of a
	// super-packet's segments passed. The others were judged from their
	// headers alone.
	SegmentPackets uint64 `json:"segment_packets"`
	// Whole counts super-packets whose segments all passed and went up to
	// TCP as one; Merged those whose surviving segments were merged again.
	Whole  uint64 `json:"whole"`
	Merged uint64 `json:"merged"`
	// OutPackets are packets the peer sent; OutWrites the system calls
	// that carried them (runs of segments are written as one).
	OutPackets uint64 `json:"out_packets"`
	OutWrites  uint64 `json:"out_writes"`
	// SentSuper are TCP super-packets the peer's netstack built (GSO);
	// SentSegments the wire segments they carry, for the fault layer;
	// SentCut those cut into their segments' headers (as Cut).
	SentSuper    uint64 `json:"sent_super_packets"`
	SentSegments uint64 `json:"sent_segments"`
	SentCut      uint64 `json:"sent_cut"`
}

// OffloadStats returns the link's offload counters (zero on a link other
// than the device link).
func (p *Peer) OffloadStats() OffloadStats {
	if p.link == nil {
		return OffloadStats{}
	}
	c := &p.link.stats
	st := OffloadStats{
		SuperPackets:   c.superPackets.Load(),
		Segments:       c.segments.Load(),
		Cut:            c.cut.Load(),
		SegmentPackets: c.segmentPackets.Load(),
		OutPackets:     c.outPackets.Load(),
		OutWrites:      c.outWrites.Load(),
		SentSuper:      c.sentSuper.Load(),
		SentSegments:   c.sentSegments.Load(),
		SentCut:        c.sentCut.Load(),
	}
	fs := p.Fault.Stats()
	st.Whole, st.Merged = fs.Whole.Load(), fs.Merged.Load()
	return st
}

func newDeviceLink(dev tun.Device) *deviceLink {
	l := &deviceLink{
		Endpoint: channel.New(outboundQueue, uint32(dev.MTU()), ""),
		out:      make(chan *gstack.PacketBuffer, outboundQueue),
		dev:      dev,
	}
	l.offload, _ = dev.(tun.Offload)
	return l
}

// start runs the read and write loops until stop.
func (l *deviceLink) start() {
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	l.wg.Add(2) // the reader stage of an offload device adds itself
	if l.offload != nil {
		go l.readOffloadLoop()
	} else {
		go l.readLoop()
	}
	go l.writeLoop(ctx)
}

// readFailed records a read error other than the device closing; stop
// returns it, so the peer's Close reports why packets stopped arriving.
func (l *deviceLink) readFailed(err error) {
	if !errors.Is(err, tun.ErrClosed) {
		l.readErr.CompareAndSwap(nil, &err)
	}
}

// networkProtocol names the IP version of pkt; 0 for anything else.
func networkProtocol(pkt []byte) tcpip.NetworkProtocolNumber {
	if len(pkt) == 0 {
		return 0
	}
	switch header.IPVersion(pkt) {
	case header.IPv4Version:
		return header.IPv4ProtocolNumber
	case header.IPv6Version:
		return header.IPv6ProtocolNumber
	}
	return 0
}

// readLoop serves a plain device: one packet per read.
func (l *deviceLink) readLoop() {
	defer l.wg.Done()
	buf := make([]byte, l.dev.MTU()+64)
	for {
		n, err := l.dev.Read(buf)
		if err != nil {
			l.readFailed(err)
			return
		}
		busypoll.Touch(n)
		proto := networkProtocol(buf[:n])
		if proto == 0 {
			continue
		}
		pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{
			Payload: buffer.MakeWithData(buf[:n]),
		})
		l.InjectInbound(proto, pkt)
		pkt.DecRef()
	}
}

// readPipeline is how many packets the offload reader may prepare ahead
// of the goroutine that delivers them.
const readPipeline = 4

// inbound is one packet read from an offload device, prepared for
// delivery: an ordinary packet alone in pkts, or a super-packet in super,
// counted in segments. The super-packet's segments are cut in header form
// (heads, cuts) only when something needs them (cut: a rule that concerns
// its connection, an observer), and their packets built into segs only
// when something needs those. The batch owns one reference to each
// packet; delivery releases them.
type inbound struct {
	proto tcpip.NetworkProtocolNumber
	pkts  []*gstack.PacketBuffer
	super *buffer.View // the super-packet (headers included); nil for an ordinary packet
	gso   tun.GSO
	count int         // its segments
	batch fault.Batch // Merge is in.merge, Segment in.segment, Cut in.cut, bound once
	link  *deviceLink

	cuts      []segCut // the segments' payloads in super, once cut
	heads     []byte   // their headers, hl bytes each
	hl        int
	headsList [][]byte
	lens      []int
	segs      []*gstack.PacketBuffer // built segments, nil until built
	built     *atomic.Uint64         // counts them
	scratch   [256]byte
}

// segment builds segment i of the super-packet (once; the batch keeps the
// reference): its own header view followed by a clone of super trimmed to
// its payload.
func (in *inbound) segment(i int) *gstack.PacketBuffer {
	in.cut()
	if pkt := in.segs[i]; pkt != nil {
		return pkt
	}
	sc := in.cuts[i]
	payload := in.super.Clone()
	payload.TrimFront(sc.off)
	payload.CapLength(sc.len)
	b := buffer.MakeWithView(payload)
	b.Prepend(buffer.NewViewWithData(in.headsList[i]))
	pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: b})
	// The kernel built the segment's data; nothing on the way can have
	// damaged it.
	pkt.RXChecksumValidated = true
	in.segs[i] = pkt
	in.built.Add(1)
	return pkt
}

// merge builds the packet carrying segments first to first+count-1 of the
// super-packet: its own header view followed by the payload, a clone of
// super trimmed to the run. The run of all segments takes super itself,
// so that its chunk is not shared while gVisor parses it.
func (in *inbound) merge(first, count int) *gstack.PacketBuffer {
	var scratch [256]byte
	s, err := tun.MergeTCP(in.super.AsSlice(), in.gso, scratch[:], first, count)
	if err != nil {
		return nil
	}
	var payload *buffer.View
	if first == 0 && count == in.count {
		payload, in.super = in.super, nil
	} else {
		payload = in.super.Clone()
	}
	payload.TrimFront(s.Off)
	payload.CapLength(s.Len)
	b := buffer.MakeWithView(buffer.NewViewWithData(s.Header))
	b.Append(payload)
	pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: b})
	// The kernel built the segments' data; nothing on the way can have
	// damaged it.
	pkt.RXChecksumValidated = true
	return pkt
}

// reset releases what delivery left and readies in for reuse.
func (in *inbound) reset() {
	if in.super != nil {
		in.super.Release()
		in.super = nil
	}
	clear(in.pkts)
	in.pkts = in.pkts[:0]
	clear(in.headsList)
	in.cuts, in.heads, in.headsList, in.lens = in.cuts[:0], in.heads[:0], in.headsList[:0], in.lens[:0]
	in.segs, in.count = in.segs[:0], 0
}

// readOffloadLoop serves an offload device in two stages, so that the
// system call, its copy and the cutting of a super-packet overlap with
// judging and delivering the previous one: a reader goroutine
// (readOffload) prepares packets and hands them over; this goroutine
// injects them in order. Batches travel back through free for reuse.
func (l *deviceLink) readOffloadLoop() {
	defer l.wg.Done()
	ready := make(chan *inbound, readPipeline)
	free := make(chan *inbound, readPipeline+2)
	for range cap(free) {
		in := &inbound{pkts: make([]*gstack.PacketBuffer, 0, 1), built: &l.stats.segmentPackets, link: l}
		in.batch.Merge, in.batch.Segment, in.batch.Cut = in.merge, in.segment, in.cut
		free <- in
	}
	l.wg.Add(1)
	go l.readOffload(ready, free)
	for in := range ready {
		l.deliver(in)
		in.reset()
		free <- in
		l.queued.Add(-1)
	}
}

// deliver injects one prepared packet, or a super-packet's segments as
// one batch in header form, cut on demand, when the dispatcher takes
// batches (one by one, built, otherwise).
func (l *deviceLink) deliver(in *inbound) {
	if in.super != nil {
		if bd := l.batcher.Load(); bd != nil {
			h := &in.batch.HeaderForm
			in.batch.Proto, in.batch.Segments, h.Heads, h.Lens = in.proto, nil, nil, nil
			h.Head, h.Len, h.Count = in.super.AsSlice(), in.super.Size(), in.count
			(*bd).DeliverBatch(&in.batch)
			in.batch.Segments, h.Heads, h.Lens, h.Head = nil, nil, nil, nil
		} else {
			for i := range in.count {
				l.InjectInbound(in.proto, in.segment(i))
			}
		}
		for i, pkt := range in.segs {
			if pkt != nil {
				pkt.DecRef()
				in.segs[i] = nil
			}
		}
	}
	for _, pkt := range in.pkts {
		l.InjectInbound(in.proto, pkt)
	}
	for _, pkt := range in.pkts {
		pkt.DecRef()
	}
	clear(in.pkts)
}

// readOffload is the reader stage: it reads into pooled 64 KiB views and
// prepares what it read. An ordinary packet is copied out of the view (so
// a small packet held in a receive queue does not pin 64 KiB) and the view
// is reused; a super-packet keeps its view, shared by its segments, and the
// reader takes a new one. It closes ready when the device fails or closes.
func (l *deviceLink) readOffload(ready chan<- *inbound, free <-chan *inbound) {
	defer l.wg.Done()
	defer close(ready)
	view := buffer.NewViewSize(tun.MaxOffloadSize)
	defer func() { view.Release() }()
	var scratch [256]byte // headers, for counting a super-packet's segments
	for {
		n, gso, err := l.offload.ReadOffload(view.AsSlice())
		if err != nil {
			l.readFailed(err)
			return
		}
		busypoll.Touch(n)
		data := view.AsSlice()[:n]
		proto := networkProtocol(data)
		if proto == 0 {
			continue
		}
		if gso.Type == tun.GSONone && tun.CompleteChecksum(data, gso) != nil {
			continue
		}
		if gso.Type == tun.GSONone {
			pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(data)})
			// A checksum the kernel left to us was just computed.
			pkt.RXChecksumValidated = gso.NeedsCsum
			if l.queued.Load() == 0 {
				// Nothing is waiting for the other stage: deliver
				// here, without waking it (a request's segment
				// reaches TCP one goroutine hand-off sooner).
				// Deliveries stay serialized and in order: the
				// other stage is idle until the next hand-over.
				l.InjectInbound(proto, pkt)
				pkt.DecRef()
				l.stats.inline.Add(1)
				continue
			}
			in := <-free
			in.proto = proto
			in.pkts = append(in.pkts, pkt)
			l.queued.Add(1)
			ready <- in
			continue
		}
		count, err := tun.SegmentCount(data, gso, scratch[:])
		l.stats.superPackets.Add(1)
		if err != nil || count == 0 {
			continue // headers no segment can be cut from: dropped
		}
		l.stats.segments.Add(uint64(count))
		in := <-free
		view.CapLength(n)
		in.proto, in.super, in.gso, in.count = proto, view, gso, count
		l.queued.Add(1)
		ready <- in
		view = buffer.NewViewSize(tun.MaxOffloadSize)
	}
}

// cut cuts the super-packet into the segments a wire would carry, in
// header form: each segment's headers (with complete checksums when the
// link's observer records them) and the place of its payload in super;
// the segments' packets are built only when needed (inbound.segment). It
// cuts once; the reader counted the segments with the same cutter, so
// this cut cannot fail. The cutter gives every segment the super-packet's
// headers, so they share one length.
func (in *inbound) cut() {
	if len(in.cuts) > 0 {
		return
	}
	in.link.stats.cut.Add(1)
	tun.SplitTCP(in.super.AsSlice(), in.gso, in.scratch[:], in.link.checksums, func(s tun.TCPSegment) error {
		in.hl = len(s.Header)
		in.heads = append(in.heads, s.Header...)
		in.cuts = append(in.cuts, segCut{s.Off, s.Len})
		in.lens = append(in.lens, len(s.Header)+s.Len)
		return nil
	})
	for i := range in.cuts {
		in.headsList = append(in.headsList, in.heads[i*in.hl:(i+1)*in.hl:(i+1)*in.hl])
		in.segs = append(in.segs, nil)
	}
	in.batch.Heads, in.batch.Lens = in.headsList, in.lens
}

// WritePackets implements stack.LinkEndpoint. When nothing is queued or
// being written, the caller writes the packets itself, at once (as gVisor's
// fdbased endpoint does): a reply leaves without waking the write loop.
// Otherwise they are queued behind the others for the write loop, each
// with a reference of its own; a full queue drops the rest, as a full NIC
// ring does.
func (l *deviceLink) WritePackets(pkts gstack.PacketBufferList) (int, tcpip.Error) {
	l.outMu.RLock()
	defer l.outMu.RUnlock()
	if l.outClosed {
		return 0, &tcpip.ErrClosedForSend{}
	}
	all := pkts.AsSlice()
	if l.pending.Load() == 0 && l.wmu.TryLock() {
		if l.pending.Load() == 0 {
			l.writePackets(all)
			l.wmu.Unlock()
			return len(all), nil
		}
		l.wmu.Unlock()
	}
	n := 0
	for _, pkt := range all {
		l.pending.Add(1)
		select {
		case l.out <- pkt.IncRef():
			n++
		default:
			l.pending.Add(-1)
			pkt.DecRef()
			return n, nil
		}
	}
	return n, nil
}

// closeOut closes the outbound queue and releases what is left in it.
func (l *deviceLink) closeOut() {
	l.outMu.Lock()
	defer l.outMu.Unlock()
	if l.outClosed {
		return
	}
	l.outClosed = true
	close(l.out)
	for pkt := range l.out {
		pkt.DecRef()
	}
}

// writeLoop drains the outbound queue in batches: it blocks for the first
// packet, takes whatever else is queued (up to maxWriteBatch packets or
// writeSlab bytes) and writes it.
func (l *deviceLink) writeLoop(ctx context.Context) {
	defer l.wg.Done()
	mtu := l.dev.MTU()
	pkts := make([]*gstack.PacketBuffer, 0, maxWriteBatch)
	for {
		var pkt *gstack.PacketBuffer
		select {
		case pkt = <-l.out:
		case <-ctx.Done():
			return
		}
		if pkt == nil {
			return // closed
		}
		l.wmu.Lock()
		pkts = append(pkts[:0], pkt)
	more:
		for total := pkt.Size(); len(pkts) < maxWriteBatch && total+mtu <= writeSlab; {
			select {
			case next := <-l.out:
				if next == nil {
					break more
				}
				pkts = append(pkts, next)
				total += next.Size()
			default:
				break more
			}
		}
		err := l.writePackets(pkts)
		for _, p := range pkts {
			p.DecRef()
		}
		l.pending.Add(-int64(len(pkts)))
		l.wmu.Unlock()
		clear(pkts)
		if errors.Is(err, tun.ErrClosed) {
			return
		}
	}
}

// writePackets writes pkts to the device; the caller holds wmu. An
// offload device gets the packets' own memory (writev, no copy) and merges
// runs of TCP segments; a plain one gets each packet flattened. Errors
// other than ErrClosed lose the packet concerned only, as on a wire.
func (l *deviceLink) writePackets(pkts []*gstack.PacketBuffer) error {
	if l.offload == nil {
		if l.slab == nil {
			l.slab = make([]byte, 0, l.dev.MTU()+64)
		}
		for _, p := range pkts {
			l.slab = l.slab[:0]
			for _, s := range p.AsSlices() {
				l.slab = append(l.slab, s...)
			}
			if _, err := l.dev.Write(l.slab); errors.Is(err, tun.ErrClosed) {
				return err
			}
		}
		return nil
	}
	out, bufs := l.wout[:0], l.wbufs[:0]
	segments := 0 // wire segments: a super-packet counts as those it carries
	for _, p := range pkts {
		start := len(bufs)
		bufs = appendSlices(bufs, p)
		g := p.GSOOptions
		o := tun.OutPacket{
			Data:    bufs[start:len(bufs):len(bufs)],
			Offload: g.Type == gstack.GSONone && g.NeedsCsum,
		}
		segments++
		switch g.Type {
		case gstack.GSOTCPv4:
			o.GSO = tun.GSO{Type: tun.GSOTCPv4, Size: g.MSS}
		case gstack.GSOTCPv6:
			o.GSO = tun.GSO{Type: tun.GSOTCPv6, Size: g.MSS}
		}
		if o.GSO.Type != tun.GSONone && g.MSS > 0 {
			segments += (p.Data().Size()+int(g.MSS)-1)/int(g.MSS) - 1
		}
		out = append(out, o)
	}
	writes, err := l.offload.WritePackets(out)
	l.stats.outPackets.Add(uint64(segments))
	l.stats.outWrites.Add(uint64(writes))
	clear(out)
	clear(bufs)
	l.wout, l.wbufs = out[:0], bufs[:0]
	return err
}

// appendSlices appends the slices holding pkt's bytes, headers first.
func appendSlices(dst [][]byte, pkt *gstack.PacketBuffer) [][]byte {
	views, off := pkt.AsViewList()
	for v := views.Front(); v != nil; v = v.Next() {
		b := v.AsSlice()
		if off >= len(b) {
			off -= len(b)
			continue
		}
		dst = append(dst, b[off:])
		off = 0
	}
	return dst
}

// stop closes the device and joins both loops.
func (l *deviceLink) stop() error {
	var err error
	l.once.Do(func() {
		if l.cancel != nil {
			l.cancel()
		}
		err = l.dev.Close()
		l.wg.Wait()
		l.closeOut()
		l.Endpoint.Close()
		if rerr := l.readErr.Load(); rerr != nil && err == nil {
			err = fmt.Errorf("read from %s: %w", l.dev.Name(), *rerr)
		}
	})
	return err
}
