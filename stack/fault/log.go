package fault

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/unplug-dev/unplug/internal/packet"
)

// DefaultLogSize is how many entries NewLog keeps when given no size.
const DefaultLogSize = 4096

// LogEntry is one line of the fault log: which rule did what to which
// packet, when, and why (the same comment a capture carries).
type LogEntry struct {
	Time     time.Time
	Rule     int
	Verdict  Verdict
	Action   Action
	Dir      packet.Direction
	Src, Dst netip.AddrPort
	Proto    uint8
	Flags    uint8
	Seq      uint32
	Len      int
	Comment  string
}

// String formats the entry as one line: time, direction, addresses, TCP
// flags and sequence number, length, and the comment.
func (l LogEntry) String() string {
	s := fmt.Sprintf("%s %s %s > %s", l.Time.Format("15:04:05.000000"), l.Dir, l.Src, l.Dst)
	if l.Proto == packet.ProtoTCP {
		s += fmt.Sprintf(" [%s] seq %d", flagString(l.Flags), l.Seq)
	}
	return s + fmt.Sprintf(" len %d: %s", l.Len, l.Comment)
}

// flagString names TCP flags as tcpdump does (S, F, R, P, ., U, E, W).
func flagString(f uint8) string {
	var b []byte
	for _, x := range []struct {
		bit  uint8
		name byte
	}{{packet.FlagSYN, 'S'}, {packet.FlagFIN, 'F'}, {packet.FlagRST, 'R'}, {packet.FlagPSH, 'P'}, {packet.FlagURG, 'U'}, {packet.FlagECE, 'E'}, {packet.FlagCWR, 'W'}, {packet.FlagACK, '.'}} {
		if f&x.bit != 0 {
			b = append(b, x.name)
		}
	}
	return string(b)
}

// Log is an Observer that keeps the fault log: the last packets a rule
// acted on (dropped, delayed, rejected, duplicated, corrupted, reordered,
// replaced) and the packets the layer made up, in order. Packets no rule
// touched are not logged. Join it with a capture to give a report its
// fault log. Observe does not allocate; the oldest entries go first when
// the log is full.
type Log struct {
	mu    sync.Mutex
	ring  []LogEntry
	next  int
	total uint64
}

var _ Observer = (*Log)(nil)

// NewLog returns a log keeping the last size entries (DefaultLogSize if
// size <= 0).
func NewLog(size int) *Log {
	if size <= 0 {
		size = DefaultLogSize
	}
	return &Log{ring: make([]LogEntry, 0, size)}
}

// Observe implements Observer.
func (l *Log) Observe(ev *Event) {
	d := ev.Decision
	if d.Rule == 0 {
		return
	}
	e := LogEntry{Time: ev.Time, Rule: d.Rule, Verdict: d.Verdict, Action: d.Action, Comment: ev.Comment}
	if p := ev.Packet; p != nil {
		e.Dir, e.Proto, e.Flags, e.Seq, e.Len = p.Dir, p.Proto, p.Flags, p.Seq, p.PayloadLen
		e.Src, e.Dst = netip.AddrPortFrom(p.Src, p.SrcPort), netip.AddrPortFrom(p.Dst, p.DstPort)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total++
	if len(l.ring) < cap(l.ring) {
		l.ring = append(l.ring, e)
		return
	}
	l.ring[l.next] = e
	l.next = (l.next + 1) % len(l.ring)
}

// Entries returns the kept entries, oldest first.
func (l *Log) Entries() []LogEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]LogEntry, 0, len(l.ring))
	out = append(out, l.ring[l.next:]...)
	return append(out, l.ring[:l.next]...)
}

// Total returns how many entries were ever logged, including those the
// log no longer keeps.
func (l *Log) Total() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}
