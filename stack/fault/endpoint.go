package fault

import (
	"container/heap"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// MaxDelayed bounds the packets a delay rule may hold at once; beyond it
// packets are dropped and counted in Stats.QueueDrops.
const MaxDelayed = 65536

// headerPeek is how many leading bytes the classifier needs: IPv6 with a few
// extension headers plus a TCP header with options.
const headerPeek = 256

// Endpoint is the fault layer: a link endpoint wrapped around the device's
// endpoint (the link/sniffer pattern) that classifies every packet in both
// directions, asks the Controller for its fate, reports it to the Observer,
// and forwards, drops or delays it. It never blocks in WritePackets: delayed
// packets wait in a single timer-driven queue.
//
// Use it as the NIC's endpoint: stack.CreateNIC(id, fault.NewEndpoint(dev, ...)).
type Endpoint struct {
	nested.Endpoint

	ctl *Controller
	obs Observer

	mu      sync.Mutex // guards queue and timer
	queue   delayQueue
	timer   tcpip.Timer
	seq     uint64
	closed  bool
	scratch sync.Pool // *[]byte for flattening packets handed to observers

	stats Stats
}

// Stats counts packets by verdict; fields are updated atomically.
type Stats struct {
	In, Out     atomic.Uint64 // packets seen per direction
	Dropped     atomic.Uint64
	Delayed     atomic.Uint64
	QueueDrops  atomic.Uint64 // delayed packets refused because the queue was full
	Unparseable atomic.Uint64
}

var _ stack.LinkEndpoint = (*Endpoint)(nil)
var _ stack.NetworkDispatcher = (*Endpoint)(nil)

// NewEndpoint wraps lower so that every packet passes ctl's rules. obs, if not
// nil, sees every packet with its decision (captures, packet logs, reports).
func NewEndpoint(lower stack.LinkEndpoint, ctl *Controller, obs Observer) *Endpoint {
	e := &Endpoint{ctl: ctl, obs: obs}
	e.scratch.New = func() any { b := make([]byte, 0, 65536); return &b }
	e.Init(lower, e)
	return e
}

// Controller returns the rules this endpoint applies.
func (e *Endpoint) Controller() *Controller { return e.ctl }

// Stats returns the endpoint's packet counters.
func (e *Endpoint) Stats() *Stats { return &e.stats }

// DeliverNetworkPacket implements stack.NetworkDispatcher: packets from the
// device travelling towards the peer.
func (e *Endpoint) DeliverNetworkPacket(protocol tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	e.stats.In.Add(1)
	d := e.decide(In, pkt)
	switch d.Verdict {
	case Pass:
		e.Endpoint.DeliverNetworkPacket(protocol, pkt)
	case Delayed:
		e.enqueue(In, protocol, pkt, d.Delay)
	}
}

// WritePackets implements stack.LinkEndpoint: packets from the peer towards the
// device. Dropped packets are reported as written, as a lossy wire would.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	all := pkts.AsSlice()
	n := len(all)
	e.stats.Out.Add(uint64(n))
	// Fast path: decide all; forward the list untouched when everything passes.
	var verdicts [64]Decision
	if n <= len(verdicts) {
		allPass := true
		for i, pkt := range all {
			verdicts[i] = e.decide(Out, pkt)
			allPass = allPass && verdicts[i].Verdict == Pass
		}
		if allPass {
			return e.forward(pkts, n)
		}
	}
	var pass stack.PacketBufferList
	for i, pkt := range all {
		var d Decision
		if n <= len(verdicts) {
			d = verdicts[i]
		} else {
			d = e.decide(Out, pkt)
		}
		switch d.Verdict {
		case Pass:
			pass.PushBack(pkt)
		case Delayed:
			e.enqueue(Out, pkt.NetworkProtocolNumber, pkt, d.Delay)
		}
	}
	if pass.Len() > 0 {
		if _, err := e.Endpoint.WritePackets(pass); err != nil {
			return 0, err
		}
	}
	return n, nil
}

func (e *Endpoint) forward(pkts stack.PacketBufferList, n int) (int, tcpip.Error) {
	if _, err := e.Endpoint.WritePackets(pkts); err != nil {
		return 0, err
	}
	return n, nil
}

// decide classifies pkt, asks the controller and tells the observer.
func (e *Endpoint) decide(dir Direction, pkt *stack.PacketBuffer) Decision {
	var head [headerPeek]byte
	size := pkt.Size()
	var p Packet
	if err := ParsePrefix(dir, head[:peek(pkt, head[:])], size, &p); err != nil {
		e.stats.Unparseable.Add(1)
	}
	d := e.ctl.Decide(&p)
	switch d.Verdict {
	case Dropped:
		e.stats.Dropped.Add(1)
	case Delayed:
		e.stats.Delayed.Add(1)
	}
	if e.obs != nil {
		bp := e.scratch.Get().(*[]byte)
		data := flatten(pkt, (*bp)[:0])
		ev := Event{Time: e.ctl.clock.Now(), Packet: &p, Data: data, Decision: d, Comment: e.ctl.Comment(d)}
		e.obs.Observe(&ev)
		*bp = data[:0]
		e.scratch.Put(bp)
	}
	return d
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

type delayed struct {
	due   tcpip.MonotonicTime
	seq   uint64 // FIFO among equal due times
	dir   Direction
	proto tcpip.NetworkProtocolNumber
	pkt   *stack.PacketBuffer
}

type delayQueue []delayed

func (q delayQueue) Len() int { return len(q) }
func (q delayQueue) Less(i, j int) bool {
	if q[i].due == q[j].due {
		return q[i].seq < q[j].seq
	}
	return q[i].due.Before(q[j].due)
}
func (q delayQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *delayQueue) Push(x any)   { *q = append(*q, x.(delayed)) }
func (q *delayQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	old[len(old)-1] = delayed{}
	*q = old[:len(old)-1]
	return x
}

// enqueue holds a reference to pkt until its delay has passed.
func (e *Endpoint) enqueue(dir Direction, proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer, d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || len(e.queue) >= MaxDelayed {
		e.stats.QueueDrops.Add(1)
		return
	}
	now := e.ctl.clock.NowMonotonic()
	e.seq++
	heap.Push(&e.queue, delayed{due: now.Add(d), seq: e.seq, dir: dir, proto: proto, pkt: pkt.IncRef()})
	if e.queue[0].seq == e.seq { // new head: (re)arm the timer
		e.armLocked(now)
	}
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

// release forwards every packet whose delay has passed, in due order.
func (e *Endpoint) release() {
	e.mu.Lock()
	now := e.ctl.clock.NowMonotonic()
	var due []delayed
	for len(e.queue) > 0 && !now.Before(e.queue[0].due) {
		due = append(due, heap.Pop(&e.queue).(delayed))
	}
	if !e.closed {
		e.armLocked(now)
	}
	e.mu.Unlock()
	for _, x := range due {
		if x.dir == In {
			e.Endpoint.DeliverNetworkPacket(x.proto, x.pkt)
		} else {
			var l stack.PacketBufferList
			l.PushBack(x.pkt)
			e.Endpoint.WritePackets(l)
		}
		x.pkt.DecRef()
	}
}

// Pending returns the number of packets currently held by delay rules.
func (e *Endpoint) Pending() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.queue)
}

// Close implements stack.LinkEndpoint: it discards delayed packets and closes
// the wrapped endpoint.
func (e *Endpoint) Close() {
	e.mu.Lock()
	e.closed = true
	if e.timer != nil {
		e.timer.Stop()
	}
	q := e.queue
	e.queue = nil
	e.mu.Unlock()
	for _, x := range q {
		x.pkt.DecRef()
	}
	e.Endpoint.Close()
}
