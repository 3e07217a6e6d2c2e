package fault

import (
	"container/heap"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/unplug-dev/unplug/internal/packet"
)

// MaxDelayed bounds the packets delay, rate and reorder rules may hold at
// once; beyond it delayed packets are dropped and counted in
// Stats.QueueDrops (reordered ones are forwarded in order instead).
const MaxDelayed = 65536

// MaxReorderGap is the largest gap= a reorder rule takes.
const MaxReorderGap = 1000

// MaxReorderHold is the longest a reorder rule holds a packet back waiting
// for gap= later packets: a held packet never outlives the sender's minimum
// retransmission timeout by much, so a flow that goes quiet is not stuck.
const MaxReorderHold = 200 * time.Millisecond

// headerPeek is how many leading bytes the classifier needs: IPv6 with a few
// extension headers plus a TCP header with options.
const headerPeek = 256

// Endpoint is the fault layer: a link endpoint wrapped around the device's
// endpoint (the link/sniffer pattern) that classifies every packet in both
// directions, asks the Controller for its fate, reports it to the Observer,
// and forwards, drops, delays, reorders, duplicates, corrupts or answers it.
// It never blocks in WritePackets: delayed and held packets wait in a single
// timer-driven queue, and packets it makes up towards the peer go through
// that queue too.
//
// Use it as the NIC's endpoint: stack.CreateNIC(id, fault.NewEndpoint(dev, ...)).
type Endpoint struct {
	nested.Endpoint

	ctl *Controller
	obs Observer

	mu      sync.Mutex // guards queue, reorder and timer
	queue   delayQueue
	reorder [2][]*delayed // held by reorder rules, per direction, in hold order
	timer   tcpip.Timer
	seq     uint64
	closed  bool
	scratch sync.Pool // *scratch for events handed to observers

	passed [2]atomic.Uint64 // packets forwarded at once, per direction: reorder gaps count these
	held   atomic.Int64     // packets in reorder

	// Upward deliveries (batch.go): serialized by up; during a batch
	// they wait in batchHeld.
	up        sync.Mutex
	batch     bool
	batchHeld []heldPacket
	validated atomic.Bool // the packet going up has checksums the link checked

	stats Stats
}

// Stats counts packets by verdict; fields are updated atomically.
type Stats struct {
	In, Out     atomic.Uint64 // packets seen per direction
	Dropped     atomic.Uint64
	Delayed     atomic.Uint64
	QueueDrops  atomic.Uint64 // delayed packets refused because the queue was full
	Unparseable atomic.Uint64
	Injected    atomic.Uint64 // packets the layer made up: RSTs, duplicates
	Corrupted   atomic.Uint64 // packets forwarded with a broken checksum
	Fragments   atomic.Uint64 // first fragments dropped for a truncated transport header
	// Batches (DeliverBatch) that went up whole, and those whose
	// surviving segments went up merged because not all of them passed.
	Whole, Merged atomic.Uint64
}

var _ stack.LinkEndpoint = (*Endpoint)(nil)
var _ stack.NetworkDispatcher = (*Endpoint)(nil)

// NewEndpoint wraps lower so that every packet passes ctl's rules. obs, if not
// nil, sees every packet with its decision (captures, packet logs, reports),
// and every packet the layer makes up (Verdict Injected).
func NewEndpoint(lower stack.LinkEndpoint, ctl *Controller, obs Observer) *Endpoint {
	e := &Endpoint{ctl: ctl, obs: obs}
	e.scratch.New = func() any { return &scratch{data: make([]byte, 0, 65536)} }
	e.Init(lower, e)
	return e
}

// Controller returns the rules this endpoint applies.
func (e *Endpoint) Controller() *Controller { return e.ctl }

// Stats returns the endpoint's packet counters.
func (e *Endpoint) Stats() *Stats { return &e.stats }

// DeliverNetworkPacket implements stack.NetworkDispatcher: packets from the
// device travelling towards the peer. It runs on the device's read path: the
// packet (or the RST or corrupted copy replacing it) goes up at once, and
// any further packet for the peer (a duplicate, reordered packets now
// overtaken) through the queue.
func (e *Endpoint) DeliverNetworkPacket(protocol tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	e.stats.In.Add(1)
	e.deliverDecided(protocol, pkt, e.decide(packet.In, pkt))
}

// deliverDecided carries out decision d on the inbound packet pkt.
func (e *Endpoint) deliverDecided(protocol tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer, d Decision) {
	switch d.Verdict {
	case Pass:
		var dup *stack.PacketBuffer
		if d.Action == ActDuplicate {
			// Copied and reported before TCP consumes pkt's headers and
			// answers it; the copy goes through the queue, as every
			// further packet for the peer does (one per timer firing, see
			// release). A deep copy, not a Clone: gVisor keeps slices of
			// a packet's headers across pull-ups that replace a shared
			// chunk, so a clone released on the timer's goroutine could
			// free memory the IP layer is still reading.
			dup = newPacket(flatten(pkt, make([]byte, 0, pkt.Size())))
			dup.RXChecksumValidated = pkt.RXChecksumValidated
			e.injected(packet.In, dup, d)
		}
		e.deliverUp(protocol, pkt)
		e.passed[0].Add(1)
		if dup != nil {
			e.enqueue(packet.In, protocol, dup, 0)
			dup.DecRef()
		}
		if e.held.Load() > 0 {
			for _, x := range e.overtaken(packet.In) {
				e.enqueue(packet.In, x.proto, x.pkt, 0)
				x.pkt.DecRef()
			}
		}
	case Delayed:
		if d.Action == ActReorder {
			if !e.hold(packet.In, protocol, pkt, d.Arg) {
				e.deliverUp(protocol, pkt)
			}
		} else {
			e.enqueue(packet.In, protocol, pkt, d.Delay)
		}
	case Dropped:
		switch d.Action {
		case ActReject:
			if rst := e.forged(packet.In, pkt, d, resetReply, packet.Out); rst != nil {
				e.writeOne(rst)
				rst.DecRef()
			}
		case ActRSTAtSeq:
			if rst := e.forged(packet.In, pkt, d, resetInPlace, packet.In); rst != nil {
				e.deliverUp(rst.NetworkProtocolNumber, rst)
				rst.DecRef()
			}
		case ActCorrupt:
			if bad := e.corrupted(pkt, d); bad != nil {
				e.deliverUp(protocol, bad)
				bad.DecRef()
			}
		}
	}
}

// WritePackets implements stack.LinkEndpoint: packets from the peer towards the
// device. Dropped packets are reported as written, as a lossy wire would.
// Packets made up towards the peer (the RST of a reject rule) are queued,
// never delivered from here: gVisor calls WritePackets with TCP locks held.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	all := pkts.AsSlice()
	n := len(all)
	e.stats.Out.Add(uint64(n))
	// Fast path: decide all; forward the list untouched when everything passes.
	var verdicts [64]Decision
	if n <= len(verdicts) {
		plain := true
		for i, pkt := range all {
			verdicts[i] = e.decide(packet.Out, pkt)
			plain = plain && verdicts[i].Verdict == Pass && verdicts[i].Action != ActDuplicate
		}
		if plain && e.held.Load() == 0 {
			e.passed[1].Add(uint64(n))
			return e.forward(pkts, n)
		}
	}
	var decided []Decision
	if n <= len(verdicts) {
		decided = verdicts[:n]
	}
	return e.writeDecided(all, decided)
}

// writeDecided acts on the verdicts for packets travelling out (deciding
// those without one: verdicts nil) and writes what passes.
func (e *Endpoint) writeDecided(all []*stack.PacketBuffer, verdicts []Decision) (int, tcpip.Error) {
	n := len(all)
	var out stack.PacketBufferList
	var owned []*stack.PacketBuffer // made here: released after the write
	for i, pkt := range all {
		var d Decision
		if verdicts != nil {
			d = verdicts[i]
		} else {
			d = e.decide(packet.Out, pkt)
		}
		switch d.Verdict {
		case Pass:
			out.PushBack(pkt)
			if d.Action == ActDuplicate {
				dup := pkt.Clone()
				e.injected(packet.Out, dup, d)
				out.PushBack(dup)
				owned = append(owned, dup)
			}
			e.passed[1].Add(1)
			if e.held.Load() > 0 {
				for _, x := range e.overtaken(packet.Out) {
					out.PushBack(x.pkt)
					owned = append(owned, x.pkt)
				}
			}
		case Delayed:
			if d.Action == ActReorder {
				if !e.hold(packet.Out, pkt.NetworkProtocolNumber, pkt, d.Arg) {
					out.PushBack(pkt)
				}
			} else {
				e.enqueue(packet.Out, pkt.NetworkProtocolNumber, pkt, d.Delay)
			}
		case Dropped:
			var made *stack.PacketBuffer
			switch d.Action {
			case ActReject:
				if rst := e.forged(packet.Out, pkt, d, resetReply, packet.In); rst != nil {
					e.enqueue(packet.In, rst.NetworkProtocolNumber, rst, 0)
					rst.DecRef()
				}
			case ActRSTAtSeq:
				made = e.forged(packet.Out, pkt, d, resetInPlace, packet.Out)
			case ActCorrupt:
				made = e.corrupted(pkt, d)
			}
			if made != nil {
				out.PushBack(made)
				owned = append(owned, made)
			}
		}
	}
	var err tcpip.Error
	if out.Len() > 0 {
		_, err = e.Endpoint.WritePackets(out)
	}
	for _, pkt := range owned {
		pkt.DecRef()
	}
	if err != nil {
		return 0, err
	}
	return n, nil
}

func (e *Endpoint) forward(pkts stack.PacketBufferList, n int) (int, tcpip.Error) {
	if _, err := e.Endpoint.WritePackets(pkts); err != nil {
		return 0, err
	}
	return n, nil
}

// writeOne hands one packet to the device.
func (e *Endpoint) writeOne(pkt *stack.PacketBuffer) {
	var l stack.PacketBufferList
	l.PushBack(pkt)
	e.Endpoint.WritePackets(l)
}

// decide classifies pkt, asks the controller and tells the observer.
func (e *Endpoint) decide(dir packet.Direction, pkt *stack.PacketBuffer) Decision {
	var p packet.Packet
	var d Decision
	if err := parsePkt(dir, pkt, &p); err != nil {
		e.stats.Unparseable.Add(1)
		if dir == packet.In && p.Fragment == packet.FirstFragment {
			// A first fragment too short to hold the transport header
			// (RFC 1858, RFC 7112) would let the datagram past every
			// rule that looks at ports or flags: the rest of the header
			// is in a fragment those rules cannot read. No stack sends
			// these; drop it, as a filtering router does.
			e.stats.Fragments.Add(1)
			d = Decision{Verdict: Dropped, Action: ActDrop}
		}
	}
	if d.Verdict == Pass {
		d = e.ctl.Decide(&p)
	}
	switch d.Verdict {
	case Dropped:
		e.stats.Dropped.Add(1)
	case Delayed:
		e.stats.Delayed.Add(1)
	}
	if e.obs != nil {
		e.observe(&p, pkt, d)
	}
	return d
}

// parsePkt classifies the packet's headers without allocating.
func parsePkt(dir packet.Direction, pkt *stack.PacketBuffer, p *packet.Packet) error {
	var head [headerPeek]byte
	return packet.ParsePrefix(dir, head[:peek(pkt, head[:])], pkt.Size(), p)
}

// scratch is the memory of one event: the observer gets pointers into it,
// valid during Observe, so the packet path does not allocate.
type scratch struct {
	ev   Event
	pkt  packet.Packet
	data []byte
}

// observe hands one event to the observer.
func (e *Endpoint) observe(p *packet.Packet, pkt *stack.PacketBuffer, d Decision) {
	sc := e.scratch.Get().(*scratch)
	sc.pkt = *p
	sc.data = flatten(pkt, sc.data[:0])
	sc.ev = Event{Time: e.ctl.clock.Now(), Packet: &sc.pkt, Data: sc.data, Decision: d, Comment: e.ctl.Comment(d)}
	e.obs.Observe(&sc.ev)
	sc.ev = Event{}
	e.scratch.Put(sc)
}

// injected counts and reports a packet the layer made up, travelling dir.
func (e *Endpoint) injected(dir packet.Direction, pkt *stack.PacketBuffer, d Decision) {
	e.stats.Injected.Add(1)
	if e.obs == nil {
		return
	}
	var p packet.Packet
	parsePkt(dir, pkt, &p)
	d.Verdict, d.Delay = Injected, 0
	e.observe(&p, pkt, d)
}

// forged makes the packet build returns for the segment pkt travelling dir
// (a RST travelling to), reports it, and returns it with one reference the
// caller owns; nil when there is nothing to send.
func (e *Endpoint) forged(dir packet.Direction, pkt *stack.PacketBuffer, d Decision, build func(*packet.Packet) []byte, to packet.Direction) *stack.PacketBuffer {
	var p packet.Packet
	if parsePkt(dir, pkt, &p) != nil {
		return nil
	}
	b := build(&p)
	if b == nil {
		return nil
	}
	out := newPacket(b)
	e.injected(to, out, d)
	return out
}

// corrupted returns a copy of pkt with one bit flipped (see corrupt), owned
// by the caller; nil when the packet has no checksum this layer can break,
// or when it is a super-packet whose checksums are computed below this
// layer: then it is only dropped. A segment whose TCP checksum was left to
// the device (GSOOptions.NeedsCsum) gets it completed in the copy first;
// the copy is a plain packet that reaches the wire as it is.
func (e *Endpoint) corrupted(pkt *stack.PacketBuffer, d Decision) *stack.PacketBuffer {
	if pkt.GSOOptions.Type != stack.GSONone {
		return nil
	}
	b := flatten(pkt, make([]byte, 0, pkt.Size()))
	if pkt.GSOOptions.NeedsCsum && !completeTCPChecksum(b) {
		return nil
	}
	if !corrupt(b, d.Arg) {
		return nil
	}
	e.stats.Corrupted.Add(1)
	return newPacket(b)
}

// newPacket wraps the IP packet b in a packet buffer with one reference.
func newPacket(b []byte) *stack.PacketBuffer {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	switch b[0] >> 4 {
	case 4:
		pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	case 6:
		pkt.NetworkProtocolNumber = header.IPv6ProtocolNumber
	}
	return pkt
}

// peek copies the packet's first bytes into dst without allocating.
func peek(pkt *stack.PacketBuffer, dst []byte) int {
	views, off := pkt.AsViewList()
	n := 0
	for v := views.Front(); v != nil && n < len(dst); v = v.Next() {
		b := v.AsSlice()
		if off >= len(b) {
			off -= len(b)
			continue
		}
		n += copy(dst[n:], b[off:])
		off = 0
	}
	return n
}

// flatten appends the whole packet to dst.
func flatten(pkt *stack.PacketBuffer, dst []byte) []byte {
	views, off := pkt.AsViewList()
	for v := views.Front(); v != nil; v = v.Next() {
		b := v.AsSlice()
		if off >= len(b) {
			off -= len(b)
			continue
		}
		dst = append(dst, b[off:]...)
		off = 0
	}
	return dst
}

// delayed is a packet held by the layer: until due (delay, rate, made-up
// packets), or until after packets have passed in its direction or due,
// whichever comes first (reorder).
type delayed struct {
	due     tcpip.MonotonicTime
	seq     uint64 // FIFO among equal due times
	dir     packet.Direction
	proto   tcpip.NetworkProtocolNumber
	pkt     *stack.PacketBuffer // nil once released
	reorder bool
	after   uint64 // reorder: release once passed[dir] reaches this
}

type delayQueue []*delayed

func (q delayQueue) Len() int { return len(q) }
func (q delayQueue) Less(i, j int) bool {
	if q[i].due == q[j].due {
		return q[i].seq < q[j].seq
	}
	return q[i].due.Before(q[j].due)
}
func (q delayQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *delayQueue) Push(x any)   { *q = append(*q, x.(*delayed)) }
func (q *delayQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return x
}

// enqueue holds a reference to pkt until its delay has passed.
func (e *Endpoint) enqueue(dir packet.Direction, proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer, d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || len(e.queue) >= MaxDelayed {
		e.stats.QueueDrops.Add(1)
		return
	}
	e.pushLocked(&delayed{dir: dir, proto: proto, pkt: pkt.IncRef()}, d)
}

func (e *Endpoint) pushLocked(x *delayed, d time.Duration) {
	now := e.ctl.clock.NowMonotonic()
	e.seq++
	x.due, x.seq = now.Add(d), e.seq
	heap.Push(&e.queue, x)
	if e.queue[0] == x { // new head: (re)arm the timer
		e.armLocked(now)
	}
}

// hold keeps pkt back until gap more packets have passed in its direction
// (or MaxReorderHold). It reports false, keeping nothing, when the queue is
// full: the caller forwards the packet in order.
func (e *Endpoint) hold(dir packet.Direction, proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer, gap int) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || len(e.queue) >= MaxDelayed {
		return false
	}
	i := dirIndex(dir)
	x := &delayed{dir: dir, proto: proto, pkt: pkt.IncRef(), reorder: true, after: e.passed[i].Load() + uint64(gap)}
	e.pushLocked(x, MaxReorderHold)
	e.reorder[i] = append(e.reorder[i], x)
	e.held.Add(1)
	return true
}

// overtaken takes the held packets of direction dir that enough later
// packets have now overtaken, in hold order. Their references pass to the
// caller.
func (e *Endpoint) overtaken(dir packet.Direction) []delayed {
	e.mu.Lock()
	defer e.mu.Unlock()
	i := dirIndex(dir)
	passed := e.passed[i].Load()
	var out []delayed
	keep := e.reorder[i][:0]
	for _, x := range e.reorder[i] {
		switch {
		case x.pkt == nil: // released by the timer
		case passed >= x.after:
			out = append(out, *x)
			x.pkt = nil
			e.held.Add(-1)
		default:
			keep = append(keep, x)
		}
	}
	clear(e.reorder[i][len(keep):])
	e.reorder[i] = keep
	return out
}

func (e *Endpoint) armLocked(now tcpip.MonotonicTime) {
	if len(e.queue) == 0 {
		return
	}
	wait := e.queue[0].due.Sub(now)
	if e.timer == nil {
		e.timer = e.ctl.clock.AfterFunc(wait, e.release)
		return
	}
	e.timer.Stop()
	e.timer.Reset(wait)
}

// release forwards the packets whose time has come, in due order. Of the
// packets towards the peer that are due at this very instant, it delivers
// one per firing and re-arms the timer for the rest at once: the
// virtual-time driver (package vlink), whose timers fire exactly on time,
// waits for the peer's TCP processing after every firing that delivered a
// packet, so what the peer sends in reply to each leaves in a fixed order
// and runs stay deterministic. Packets that became due while the timer was
// late (wall-clock time) go together, so a busy link is not slowed down.
func (e *Endpoint) release() {
	e.mu.Lock()
	now := e.ctl.clock.NowMonotonic()
	var due []delayed
	for len(e.queue) > 0 && !now.Before(e.queue[0].due) {
		x := heap.Pop(&e.queue).(*delayed)
		if x.pkt == nil {
			continue // a reordered packet released by its gap
		}
		if x.reorder {
			e.held.Add(-1) // stays in e.reorder until the next overtaken
		}
		due = append(due, *x)
		x.pkt = nil
		if x.dir == packet.In && x.due == now {
			break
		}
	}
	if !e.closed {
		e.armLocked(now)
	}
	e.mu.Unlock()
	for _, x := range due {
		if x.dir == packet.In {
			e.deliverUp(x.proto, x.pkt)
		} else {
			e.writeOne(x.pkt)
		}
		x.pkt.DecRef()
	}
}

// Pending returns the number of packets currently held by delay, rate and
// reorder rules.
func (e *Endpoint) Pending() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, x := range e.queue {
		if x.pkt != nil {
			n++
		}
	}
	return n
}

// Close implements stack.LinkEndpoint: it discards held packets and closes
// the wrapped endpoint.
func (e *Endpoint) Close() {
	e.mu.Lock()
	e.closed = true
	if e.timer != nil {
		e.timer.Stop()
	}
	q := e.queue
	e.queue = nil
	e.reorder = [2][]*delayed{}
	e.held.Store(0)
	e.mu.Unlock()
	for _, x := range q {
		if x.pkt != nil {
			x.pkt.DecRef()
		}
	}
	e.Endpoint.Close()
}
