package scenarios

import (
	"net/netip"
	"sync"
	"time"

	"github.com/unplug-dev/unplug/internal/flow"
	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack/fault"
)

// connTracker follows every TCP connection the recorder numbers, with what
// the per-connection report needs. It is a fault.Observer placed after
// the recorder.
type connTracker struct {
	rec *recorder
	// onNew, if set, is called when a connection's first packet is seen.
	onNew func()
	mu    sync.Mutex
	conns map[*connRec]*connTrack
	order []*connTrack
}

// connTrack is the wire's view of one connection.
type connTrack struct {
	id             int
	client, peer   netip.AddrPort
	opened         time.Duration
	synAck         bool
	established    time.Duration
	hasEstablished bool
	base           [3]uint32 // ISN per direction
	hasBase        [3]bool
	maxEnd         [3]uint32 // highest payload sequence end that passed
	hasMax         [3]bool
	fin, rst       [3]time.Duration
	hasFin, hasRst [3]bool
	retrans        [3]int
	probes         int
	lastKind       string // the program's last retransmission/probe kind
	lastIn         time.Duration
	firstDrop      time.Duration
	lastDrop       time.Duration
	dropped        int
	passedAfter    [3]bool // a packet passed in each direction after lastDrop
	recovered      time.Duration
	hasRecovered   bool
	firstData      time.Duration // first dropped data segment from the program
	hasFirstData   bool
	lastRecv       time.Duration // last packet from the peer that passed
	intervals      []time.Duration
	ratios         []float64
	injectedRST    bool
}

func newConnTracker(rec *recorder) *connTracker {
	return &connTracker{rec: rec, conns: map[*connRec]*connTrack{}}
}

// Observe implements fault.Observer: the recorder first, then the
// per-connection view of the same packet under the recorder's conn id.
func (ct *connTracker) Observe(ev *fault.Event) {
	ct.rec.Observe(ev)
	p := ev.Packet
	if p == nil || p.Version == 0 || !p.IsTCP() {
		return
	}
	seg := flow.SegmentOf(p)
	key := flow.KeyOf(&seg)
	ct.rec.mu.Lock()
	cr := ct.rec.conns[key]
	t := ev.Time.Sub(ct.rec.start)
	var pk Packet
	if n := len(ct.rec.retrans); n > 0 && ct.rec.retrans[n-1].T == t && cr != nil && ct.rec.retrans[n-1].Conn == cr.id {
		r := ct.rec.retrans[n-1]
		pk = Packet{Kind: r.Kind, Interval: r.Interval, Ratio: r.Ratio}
	}
	ct.rec.mu.Unlock()
	if cr == nil {
		return
	}
	ct.mu.Lock()
	defer ct.mu.Unlock()
	c := ct.conns[cr]
	if c == nil {
		c = &connTrack{id: cr.id, client: key.App, peer: key.Peer, opened: t}
		ct.conns[cr] = c
		ct.order = append(ct.order, c)
		if ct.onNew != nil {
			ct.onNew()
		}
	}
	c.observe(t, p, ev.Decision.Verdict, pk)
}

func (c *connTrack) observe(t time.Duration, p *packet.Packet, verdict fault.Verdict, pk Packet) {
	d := p.Dir
	passed := verdict != fault.Dropped
	syn := p.Flags&packet.FlagSYN != 0
	ack := p.Flags&packet.FlagACK != 0
	if syn && !c.hasBase[d] {
		c.base[d], c.hasBase[d] = p.Seq, true
	} else if !c.hasBase[d] {
		c.base[d], c.hasBase[d] = p.Seq-1, true
	}
	if syn && ack && d == packet.Out && passed {
		c.synAck = true
	}
	if !c.hasEstablished && passed && ack && !syn && d == packet.In && c.synAck {
		c.established, c.hasEstablished = t, true
	}
	if verdict == fault.Injected {
		if p.Flags&packet.FlagRST != 0 {
			c.injectedRST = true
			if !c.hasRst[packet.Out] {
				c.rst[packet.Out], c.hasRst[packet.Out] = t, true
			}
		}
		return
	}
	if p.Flags&packet.FlagFIN != 0 && !c.hasFin[d] {
		c.fin[d], c.hasFin[d] = t, true
	}
	if p.Flags&packet.FlagRST != 0 && !c.hasRst[d] {
		c.rst[d], c.hasRst[d] = t, true
	}
	if passed && p.PayloadLen > 0 {
		end := p.Seq + uint32(p.PayloadLen)
		if !c.hasMax[d] || int32(end-c.maxEnd[d]) > 0 {
			c.maxEnd[d], c.hasMax[d] = end, true
		}
	}
	if d == packet.Out && passed {
		c.lastRecv = t
	}
	if d == packet.In {
		c.lastIn = t
	}
	switch pk.Kind {
	case "retransmit":
		c.retrans[d]++
	case "keepalive-probe", "zero-window-probe":
		if d == packet.In {
			c.probes++
		}
	}
	if d == packet.In && pk.Kind != "" {
		c.lastKind = pk.Kind
		if pk.Interval > 0 {
			c.intervals = append(c.intervals, pk.Interval)
		}
		if pk.Ratio > 0 && !passed {
			c.ratios = append(c.ratios, pk.Ratio)
		}
	}
	if !passed {
		if c.dropped == 0 {
			c.firstDrop = t
		}
		c.dropped++
		c.lastDrop = t
		c.passedAfter = [3]bool{}
		c.hasRecovered = false
		if d == packet.In && (p.PayloadLen > 0 || p.Flags&packet.FlagFIN != 0) && !c.hasFirstData {
			c.firstData, c.hasFirstData = t, true
		}
		return
	}
	if c.dropped > 0 && !c.hasRecovered {
		c.passedAfter[d] = true
		if c.passedAfter[packet.In] && c.passedAfter[packet.Out] {
			c.recovered, c.hasRecovered = t, true
		}
	}
}

func (c *connTrack) bytes(d packet.Direction) int64 {
	if !c.hasMax[d] {
		return 0
	}
	n := int64(int32(c.maxEnd[d] - c.base[d] - 1))
	return max(n, 0)
}
