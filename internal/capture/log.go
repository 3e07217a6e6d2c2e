package capture

import (
	"io"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/unplug-dev/unplug/internal/flow"
	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack/fault"
)

// Logger writes one line per packet for --log-packets, in a tcpdump-like
// format:
//
//	0.000000 in  198.18.0.1:40000 > 198.18.0.2:80 [S] seq 1000, win 64240, length 0, pass
//	0.000120 out 198.18.0.2:80 > 198.18.0.1:40000 [S.] seq 5000, ack 1001, win 65535, length 0, pass
//	0.000300 in  198.18.0.1:40000 > 198.18.0.2:80 [P.] seq 1:101, ack 1, win 502, length 100, drop rule 1
//	0.200000 in  198.18.0.1:40000 > 198.18.0.2:80 [P.] seq 1:101, ack 1, win 502, length 100, drop rule 1 RETRANSMIT
//	0.400000 out 198.18.0.2:80 > 198.18.0.1:40000 [.] seq 1, ack 101, win 65535, length 0, delay 200ms rule 2
//
// Fields: seconds since start (from Event.Time, so virtual time works);
// direction ("in" is towards the peer, "out" from it); source > destination;
// TCP flags as tcpdump prints them (S SYN, F FIN, R RST, P PSH, . ACK, U URG,
// E ECE, W CWR); seq (start:end for data) and ack; the advertised window
// (unscaled); the payload length; the fault layer's verdict with its rule;
// and a tag: RETRANSMIT for sequence space the flow already sent,
// KEEPALIVE or ZERO-WINDOW-PROBE for probes (see RetransmitTracker).
//
// Sequence numbers are relative, as tcpdump prints them: SYN segments show
// absolute seq and ack and set each side's initial sequence number (ISN);
// later segments show seq minus their side's ISN and ack minus the other
// side's ISN, so the first data byte is 1. A connection first seen mid-stream
// takes the first seq seen minus one as its ISN (and the first ack minus one
// for the other side). UDP, ICMP and other packets get a short line with
// their length; unparseable packets show only their length and verdict.
//
// A Logger is safe for concurrent use and does not allocate per packet. Each
// line is one Write to the underlying writer: give it a bufio.Writer for files
// and call Flush. After the first write error it stops logging (see Err).
type Logger struct {
	mu      sync.Mutex
	w       io.Writer
	start   time.Time
	tracker *RetransmitTracker
	conns   flow.Table[connKey, connBases]
	line    []byte
	err     error
}

var _ fault.Observer = (*Logger)(nil)

// connKey identifies a TCP connection regardless of direction: a <= b.
type connKey struct{ a, b netip.AddrPort }

// connBases holds each side's ISN for relative sequence numbers; side 0 is
// connKey.a.
type connBases struct {
	isn   [2]uint32
	known [2]bool
}

// NewLogger returns a Logger writing to w, with times relative to start.
func NewLogger(w io.Writer, start time.Time) *Logger {
	return &Logger{
		w:       w,
		start:   start,
		tracker: NewRetransmitTracker(),
		conns:   flow.NewTable[connKey, connBases](DefaultMaxFlows),
		line:    make([]byte, 0, 256),
	}
}

// Observe writes one line for ev. It implements fault.Observer.
func (l *Logger) Observe(ev *fault.Event) {
	if ev == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return
	}
	l.line = l.format(l.line[:0], ev)
	if _, err := l.w.Write(l.line); err != nil {
		l.err = err
	}
}

// Flush flushes the underlying writer if it has a Flush method (such as a
// bufio.Writer), and returns the first write error.
func (l *Logger) Flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	if f, ok := l.w.(interface{ Flush() error }); ok {
		l.err = f.Flush()
	}
	return l.err
}

// Err returns the first write error, or nil.
func (l *Logger) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// format appends ev's line to b.
func (l *Logger) format(b []byte, ev *fault.Event) []byte {
	b = appendRelTime(b, ev.Time.Sub(l.start))
	p := ev.Packet
	var dir packet.Direction
	if p != nil {
		dir = p.Dir
	}
	switch dir {
	case packet.In:
		b = append(b, " in  "...)
	case packet.Out:
		b = append(b, " out "...)
	default:
		b = append(b, " ?   "...)
	}

	switch {
	case p == nil || p.Version == 0:
		b = append(b, "unparseable, length "...)
		b = strconv.AppendInt(b, int64(len(ev.Data)), 10)
	case (p.Proto == packet.ProtoTCP || p.Proto == packet.ProtoUDP) && p.SrcPort == 0 && p.DstPort == 0:
		// A non-first IP fragment: no transport header to show.
		b = p.Src.AppendTo(b)
		b = append(b, " > "...)
		b = p.Dst.AppendTo(b)
		b = append(b, " fragment, proto "...)
		b = strconv.AppendUint(b, uint64(p.Proto), 10)
		b = append(b, ", length "...)
		b = strconv.AppendInt(b, int64(p.Len), 10)
	case p.Proto == packet.ProtoTCP:
		b = l.formatTCP(b, p)
	case p.Proto == packet.ProtoUDP:
		b = netip.AddrPortFrom(p.Src, p.SrcPort).AppendTo(b)
		b = append(b, " > "...)
		b = netip.AddrPortFrom(p.Dst, p.DstPort).AppendTo(b)
		b = append(b, " UDP, length "...)
		b = strconv.AppendInt(b, int64(p.PayloadLen), 10)
	default:
		b = p.Src.AppendTo(b)
		b = append(b, " > "...)
		b = p.Dst.AppendTo(b)
		switch p.Proto {
		case packet.ProtoICMP:
			b = append(b, " ICMP"...)
		case packet.ProtoICMPv6:
			b = append(b, " ICMP6"...)
		default:
			b = append(b, " proto "...)
			b = strconv.AppendUint(b, uint64(p.Proto), 10)
		}
		b = append(b, ", length "...)
		b = strconv.AppendInt(b, int64(p.Len), 10)
	}

	b = append(b, ", "...)
	b = appendDecision(b, ev.Decision)
	if p != nil {
		switch l.tracker.Classify(p) {
		case flow.KindRetransmit:
			b = append(b, " RETRANSMIT"...)
		case flow.KindKeepaliveProbe:
			b = append(b, " KEEPALIVE"...)
		case flow.KindZeroWindowProbe:
			b = append(b, " ZERO-WINDOW-PROBE"...)
		}
	}
	return append(b, '\n')
}

// formatTCP appends the addresses, flags, sequence numbers, window and length
// of a TCP segment.
func (l *Logger) formatTCP(b []byte, p *packet.Packet) []byte {
	src := netip.AddrPortFrom(p.Src, p.SrcPort)
	dst := netip.AddrPortFrom(p.Dst, p.DstPort)
	b = src.AppendTo(b)
	b = append(b, " > "...)
	b = dst.AppendTo(b)
	b = append(b, ' ')
	b = appendFlags(b, p.Flags)

	seq, ack := l.relative(src, dst, p)
	b = append(b, " seq "...)
	b = strconv.AppendUint(b, uint64(seq), 10)
	if p.PayloadLen > 0 {
		b = append(b, ':')
		b = strconv.AppendUint(b, uint64(seq+uint32(p.PayloadLen)), 10)
	}
	if p.Flags&packet.FlagACK != 0 {
		b = append(b, ", ack "...)
		b = strconv.AppendUint(b, uint64(ack), 10)
	}
	b = append(b, ", win "...)
	b = strconv.AppendUint(b, uint64(p.Window), 10)
	b = append(b, ", length "...)
	return strconv.AppendInt(b, int64(p.PayloadLen), 10)
}

// relative returns the seq and ack to print for p, updating the
// connection's ISNs.
func (l *Logger) relative(src, dst netip.AddrPort, p *packet.Packet) (seq, ack uint32) {
	k, self := connKey{a: src, b: dst}, 0
	if src.Compare(dst) > 0 {
		k, self = connKey{a: dst, b: src}, 1
	}
	other := 1 - self
	c, _ := l.conns.Get(k)
	hasACK := p.Flags&packet.FlagACK != 0
	if p.Flags&packet.FlagSYN != 0 {
		c.isn[self], c.known[self] = p.Seq, true
		if hasACK {
			c.isn[other], c.known[other] = p.Ack-1, true
		}
		l.conns.Put(k, c)
		return p.Seq, p.Ack
	}
	if !c.known[self] || (hasACK && !c.known[other]) {
		if !c.known[self] {
			c.isn[self], c.known[self] = p.Seq-1, true
		}
		if hasACK && !c.known[other] {
			c.isn[other], c.known[other] = p.Ack-1, true
		}
		l.conns.Put(k, c)
	}
	return p.Seq - c.isn[self], p.Ack - c.isn[other]
}

// appendFlags appends TCP flags in tcpdump's notation: "[S.]", "[P.]"
// (packet.AppendFlags), "[none]" for none.
func appendFlags(b []byte, f uint8) []byte {
	b = append(b, '[')
	n := len(b)
	b = packet.AppendFlags(b, f)
	if len(b) == n {
		b = append(b, "none"...)
	}
	return append(b, ']')
}

// appendRelTime appends d as seconds with six decimals.
func appendRelTime(b []byte, d time.Duration) []byte {
	us := d.Microseconds()
	if us < 0 {
		b = append(b, '-')
		us = -us
	}
	b = strconv.AppendInt(b, us/1e6, 10)
	b = append(b, '.')
	frac := us % 1e6
	for div := int64(1e5); div > 0; div /= 10 {
		b = append(b, byte('0'+frac/div%10))
	}
	return b
}

// appendDecision appends "pass", "drop rule 1" or "delay 200ms rule 2".
func appendDecision(b []byte, d fault.Decision) []byte {
	b = append(b, d.Verdict.String()...)
	if d.Verdict == fault.Delayed {
		b = append(b, ' ')
		b = appendDuration(b, d.Delay)
	}
	if d.Rule != 0 {
		b = append(b, " rule "...)
		b = strconv.AppendInt(b, int64(d.Rule), 10)
	}
	return b
}

// appendDuration appends d compactly ("200ms", "1.5s", "250us") without
// allocating, unlike time.Duration.String.
func appendDuration(b []byte, d time.Duration) []byte {
	switch {
	case d >= time.Second || d <= -time.Second:
		b = strconv.AppendFloat(b, d.Seconds(), 'f', -1, 64)
		return append(b, 's')
	case d >= time.Millisecond || d <= -time.Millisecond:
		b = strconv.AppendFloat(b, float64(d)/float64(time.Millisecond), 'f', -1, 64)
		return append(b, "ms"...)
	case d == 0:
		return append(b, '0')
	}
	b = strconv.AppendFloat(b, float64(d)/float64(time.Microsecond), 'f', -1, 64)
	return append(b, "us"...)
}
