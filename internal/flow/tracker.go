// Package flow follows TCP connections from the segments crossing unplug's
// fault layer and tells what each segment means for its connection: new data
// or a retransmission, a keepalive or zero-window probe, the handshake's
// final ACK, a window update; how many bytes and retransmissions the
// connection has carried; whether it is established. The fault rules select
// packets by this meaning, and the capture's packet log and the scenario
// reports print it.
//
// Build a Tracker with NewTracker and show it every segment once, in the
// order they cross the link, with Track. Memory is bounded: the tracker
// remembers at most a fixed number of connections and forgets the least
// recently active. The package depends on nothing but the standard library
// (and unplug's stdlib-only packet package), so both the fault layer and
// the capture can use it.
package flow

import (
	"net/netip"

	"github.com/unplug-dev/unplug/internal/packet"
)

// probeMask are the flags that must be ACK alone on a probe.
const probeMask = packet.FlagSYN | packet.FlagFIN | packet.FlagRST | packet.FlagPSH | packet.FlagURG | packet.FlagACK

// Segment is what the tracker needs of one TCP segment. SegmentOf fills it
// from a parsed packet.
type Segment struct {
	Dir              packet.Direction
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Flags            uint8
	Seq, Ack         uint32
	Window           uint16
	Len              int // payload bytes
}

// SegmentOf returns the part of the parsed packet p the tracker needs. It is
// meaningful for parsed TCP packets only (p.IsTCP()).
func SegmentOf(p *packet.Packet) Segment {
	return Segment{
		Dir: p.Dir, Src: p.Src, Dst: p.Dst, SrcPort: p.SrcPort, DstPort: p.DstPort,
		Flags: p.Flags, Seq: p.Seq, Ack: p.Ack, Window: p.Window, Len: p.PayloadLen,
	}
}

// Kind is what a TCP segment is relative to what its flow sent before.
type Kind uint8

// Kinds of segment, as told by Tracker.Track.
const (
	// KindOther is anything the tracker does not follow: not TCP,
	// unparseable, or an IP fragment without a TCP header.
	KindOther Kind = iota
	// KindNew is a segment carrying no sequence space sent before: new data,
	// a pure ACK, a RST, or the first segment seen of a flow.
	KindNew
	// KindRetransmit is a segment carrying sequence space the flow already
	// sent: data starting below the highest sequence end seen, or a SYN or
	// FIN sent again.
	KindRetransmit
	// KindKeepaliveProbe is an ACK-only segment with 0 or 1 byte one below
	// what the sender has sent or the other side has acknowledged (RFC 1122
	// 4.2.3.6): a keepalive, or a zero-window probe sent before any zero
	// window was seen.
	KindKeepaliveProbe
	// KindZeroWindowProbe is a probe shaped like KindKeepaliveProbe sent
	// while the other direction's last advertised window was zero.
	KindZeroWindowProbe
)

// String returns "other", "new", "retransmit", "keepalive-probe" or
// "zero-window-probe".
func (k Kind) String() string {
	switch k {
	case KindNew:
		return "new"
	case KindRetransmit:
		return "retransmit"
	case KindKeepaliveProbe:
		return "keepalive-probe"
	case KindZeroWindowProbe:
		return "zero-window-probe"
	}
	return "other"
}

// Key identifies one TCP connection from the peer's point of view: Peer is
// the address and port on unplug's side of the link, App the other end. A
// segment travelling In has App as its source; one travelling Out has Peer.
type Key struct {
	Peer, App netip.AddrPort
}

// KeyOf returns the connection s belongs to.
func KeyOf(s *Segment) Key {
	src := netip.AddrPortFrom(s.Src, s.SrcPort)
	dst := netip.AddrPortFrom(s.Dst, s.DstPort)
	if s.Dir == packet.Out {
		return Key{Peer: src, App: dst}
	}
	return Key{Peer: dst, App: src}
}

// String returns "APP > PEER".
func (k Key) String() string { return k.App.String() + " > " + k.Peer.String() }

// half is what one direction of a connection has sent so far.
type half struct {
	seen    bool
	hasSYN  bool
	hasAck  bool
	hasData bool
	end     uint32 // highest sequence end (seq + data + SYN + FIN) seen
	isn     uint32 // sequence number of the SYN, when hasSYN
	origin  uint32 // relative sequence numbers count from here (the ISN)
	win     uint16 // last advertised window (unscaled)
	ack     uint32 // last acknowledgment number, when hasAck
	dataEnd uint32 // highest payload end seen, when hasData
	bytes   uint64 // new payload bytes carried
	retrans uint32 // retransmissions sent
}

// conn is one connection: both directions and what they add up to.
type conn struct {
	h           [2]half // indexed by Dir-1
	born        int64   // when its opening SYN was seen; 0 = first seen mid-stream
	established bool
}

// Info is what Track learned from one segment and its connection.
type Info struct {
	// Kind classifies the segment against what its direction sent before.
	Kind Kind
	// Key is the segment's connection.
	Key Key
	// Opened is set on the SYN (without ACK) that started the connection;
	// not on its retransmissions.
	Opened bool
	// HandshakeAck is set on the ACK completing the three-way handshake
	// (and on exact repeats of it): no data, acknowledging the other
	// side's SYN, sent right after the sender's own SYN.
	HandshakeAck bool
	// WindowUpdate is set on a pure ACK that only changes the advertised
	// window (Wireshark's tcp.analysis.window_update): same sequence and
	// acknowledgment numbers as before, a different, non-zero window.
	WindowUpdate bool
	// Established reports whether the connection was established before
	// this segment: its handshake completed, or it was first seen after
	// the handshake.
	Established bool
	// Born is the now given to Track with the connection's opening SYN, or
	// 0 if the tracker first saw the connection after that SYN.
	Born int64
	// RelSeq is the segment's sequence number relative to its direction's
	// initial sequence number, so the first data byte is 1 (as Wireshark
	// shows it). If the SYN was not seen, the first segment seen starts at 1.
	RelSeq uint32
	// RelAck is the segment's acknowledgment number relative to the other
	// direction's initial sequence number (0 without ACK, or before that
	// direction was seen).
	RelAck uint32
	// Bytes counts the new payload bytes each direction carried, this
	// segment included, indexed by Dir-1; NewBytes is this segment's share.
	Bytes    [2]uint64
	NewBytes int
	// Retrans counts each direction's retransmissions (KindRetransmit
	// segments), this segment included, indexed by Dir-1.
	Retrans [2]uint32
}

// seqBefore reports a < b in sequence-number (serial) arithmetic, RFC 1982.
func seqBefore(a, b uint32) bool { return int32(a-b) < 0 }

// Tracker follows TCP connections from the segments it is shown in order
// and classifies each. It keeps state for a bounded number of connections,
// forgetting the least recently active.
//
// A Tracker is not safe for concurrent use.
type Tracker struct {
	conns Table[Key, conn]
}

// NewTracker returns an empty tracker remembering about limit connections
// (DefaultMaxConns if limit <= 0).
func NewTracker(limit int) *Tracker {
	if limit <= 0 {
		limit = DefaultMaxConns
	}
	return &Tracker{conns: NewTable[Key, conn](limit)}
}

// Len returns the number of connections remembered.
func (t *Tracker) Len() int { return t.conns.Len() }

// Classify records s and returns its kind; it is Track without the details.
func (t *Tracker) Classify(s *Segment) Kind { return t.Track(s, 0).Kind }

// Track records s and returns what it is. now is any monotonic timestamp the
// caller uses consistently (0 when it has none); it becomes the connection's
// Born when s opens one. The first segment seen of a flow is KindNew, since
// nothing is known of what came before it. Sequence numbers compare in
// serial arithmetic, so flows crossing 2^32 work. Show each segment once.
func (t *Tracker) Track(s *Segment, now int64) Info {
	d, k, tcp := locate(s)
	if !tcp {
		return Info{}
	}
	c, ok := t.conns.Get(k)
	h, o := &c.h[d], &c.h[1-d]

	segLen := uint32(s.Len)
	syn := s.Flags&packet.FlagSYN != 0
	if syn {
		segLen++
	}
	if s.Flags&packet.FlagFIN != 0 {
		segLen++
	}
	end := s.Seq + segLen
	info := Info{Key: k, Kind: KindNew}

	if s.Flags&packet.FlagRST != 0 {
		// A RST consumes no sequence space and may come from a stack that
		// knows nothing of the connection: remember only its window.
		if ok && h.seen {
			h.win = s.Window
			t.conns.Put(k, c)
		}
		if ok {
			c.fill(&info, s, d)
			info.Established = c.established
		}
		return info
	}

	fresh := half{seen: true, end: end, isn: s.Seq, hasSYN: syn, win: s.Window, origin: s.Seq - 1}
	if syn {
		fresh.origin = s.Seq
	}
	switch {
	case !ok || !h.seen:
		if !ok {
			c.established = !syn
			if syn && s.Flags&packet.FlagACK == 0 {
				c.born = now
				info.Opened = true
			}
		}
		*h = fresh
	case syn:
		if h.hasSYN && h.isn == s.Seq {
			info.Kind = KindRetransmit
			break
		}
		if s.Flags&packet.FlagACK == 0 {
			// A new connection on the same 4-tuple.
			c = conn{born: now}
			h, o = &c.h[d], &c.h[1-d]
			info.Opened = true
		}
		*h = fresh
	case s.Flags&probeMask == packet.FlagACK && s.Len <= 1 &&
		(s.Seq == h.end-1 || (o.hasAck && s.Seq == o.ack-1)):
		info.Kind = KindKeepaliveProbe
		if o.seen && o.win == 0 {
			info.Kind = KindZeroWindowProbe
		}
	case segLen == 0:
		// A pure ACK: never a retransmission. Its seq is the sender's
		// snd.nxt, which is ahead of end if we missed segments.
		if s.Flags&(packet.FlagSYN|packet.FlagFIN|packet.FlagRST) == 0 && s.Flags&packet.FlagACK != 0 && h.hasAck &&
			s.Seq == h.end && s.Ack == h.ack && s.Window != h.win && s.Window != 0 {
			info.WindowUpdate = true
		}
	case seqBefore(s.Seq, h.end):
		info.Kind = KindRetransmit
	}

	if s.Flags&(packet.FlagSYN|packet.FlagFIN|packet.FlagRST) == 0 && s.Flags&packet.FlagACK != 0 && s.Len == 0 &&
		h.hasSYN && o.hasSYN && s.Seq == h.isn+1 && s.Ack == o.isn+1 {
		info.HandshakeAck = true
	}
	info.Established = c.established
	if !syn && s.Flags&packet.FlagACK != 0 && o.hasSYN && seqBefore(o.isn, s.Ack) {
		c.established = true
	}

	if s.Len > 0 {
		dataEnd := s.Seq + uint32(s.Len)
		switch {
		case !h.hasData:
			h.hasData, h.dataEnd = true, dataEnd
			info.NewBytes = s.Len
		case seqBefore(h.dataEnd, dataEnd):
			info.NewBytes = int(min(dataEnd-h.dataEnd, uint32(s.Len)))
			h.dataEnd = dataEnd
		}
		h.bytes += uint64(info.NewBytes)
	}
	if info.Kind == KindRetransmit {
		h.retrans++
	}
	if seqBefore(h.end, end) {
		h.end = end
	}
	h.win = s.Window
	if s.Flags&packet.FlagACK != 0 {
		h.ack, h.hasAck = s.Ack, true
	}
	t.conns.Put(k, c)
	c.fill(&info, s, d)
	return info
}

// fill copies the connection's totals into info.
func (c *conn) fill(info *Info, s *Segment, d int) {
	h, o := &c.h[d], &c.h[1-d]
	if h.seen {
		info.RelSeq = s.Seq - h.origin
	}
	if o.seen && s.Flags&packet.FlagACK != 0 {
		info.RelAck = s.Ack - o.origin
	}
	info.Born = c.born
	for i := range c.h {
		info.Bytes[i] = c.h[i].bytes
		info.Retrans[i] = c.h[i].retrans
	}
}

// Peek returns what Track would say of s about its connection (Key,
// RelSeq, RelAck, Established, Born, the byte and retransmission totals)
// without recording it: for segments that are no transmission of the
// sender's, such as those the fault layer makes up. Kind is KindNew, or
// KindOther for a segment of no TCP connection.
func (t *Tracker) Peek(s *Segment) Info {
	d, k, tcp := locate(s)
	if !tcp {
		return Info{}
	}
	info := Info{Key: k, Kind: KindNew}
	if c, ok := t.conns.Peek(k); ok {
		c.fill(&info, s, d)
		info.Established = c.established
	}
	return info
}

// locate returns the index of s's direction in conn.h, its connection, and
// false for a segment without ports (not one the tracker can follow).
func locate(s *Segment) (d int, k Key, ok bool) {
	if s.SrcPort == 0 && s.DstPort == 0 {
		return 0, Key{}, false
	}
	if s.Dir == packet.Out {
		d = 1
	}
	return d, KeyOf(s), true
}
