package fault

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"

	"github.com/unplug-dev/unplug/internal/packet"
)

func checksumOf(b []byte) uint16 { return checksum.Checksum(b, 0) }

// tcp4 builds an IPv4 TCP segment from 198.18.0.1:sport to 198.18.0.2:dport.
func tcp4(sport, dport uint16, flags uint8, seq uint32, payload int) []byte {
	b := make([]byte, 40+payload)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = 64
	b[9] = packet.ProtoTCP
	copy(b[12:], netip.MustParseAddr("198.18.0.1").AsSlice())
	copy(b[16:], netip.MustParseAddr("198.18.0.2").AsSlice())
	t := b[20:]
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dport)
	binary.BigEndian.PutUint32(t[4:], seq)
	t[12] = 5 << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], 65535)
	return b
}

// tcp6 builds an IPv6 TCP segment with one destination-options extension header.
func tcp6(sport, dport uint16, flags uint8, payload int) []byte {
	b := make([]byte, 40+8+20+payload)
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
	b[6] = 60 // destination options
	b[7] = 64
	copy(b[8:], netip.MustParseAddr("fd00:198:18::1").AsSlice())
	copy(b[24:], netip.MustParseAddr("fd00:198:18::2").AsSlice())
	b[40] = packet.ProtoTCP // next header after the option header
	t := b[48:]
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dport)
	t[12] = 5 << 4
	t[13] = flags
	return b
}

// seg describes a TCP segment for tests; build returns it as a checksummed
// IP packet (IPv4 or IPv6 by src's family).
type seg struct {
	src, dst     netip.Addr
	sport, dport uint16
	flags        uint8
	seq, ack     uint32
	win          uint16
	payload      int
}

var (
	app4  = netip.MustParseAddr("198.18.0.1")
	peer4 = netip.MustParseAddr("198.18.0.2")
	app6  = netip.MustParseAddr("fd00:198:18::1")
	peer6 = netip.MustParseAddr("fd00:198:18::2")
)

func (s seg) build() []byte {
	h := buildTCP(s.src, s.dst, s.sport, s.dport, s.seq, s.ack, s.flags)
	b := append(h, make([]byte, s.payload)...)
	for i := range s.payload {
		b[len(h)+i] = byte('a' + i%26)
	}
	off := ipv4HeaderLen
	if s.src.Is4() {
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		b[10], b[11] = 0, 0
		binary.BigEndian.PutUint16(b[10:], ^checksumOf(b[:ipv4HeaderLen]))
	} else {
		off = ipv6HeaderLen
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)-ipv6HeaderLen))
	}
	tcp := b[off:]
	binary.BigEndian.PutUint16(tcp[14:], s.win)
	tcp[16], tcp[17] = 0, 0
	binary.BigEndian.PutUint16(tcp[16:], ^transportChecksum(b, tcp, packet.ProtoTCP))
	return b
}

// in and out build segments of the test connection 198.18.0.1:40000 <->
// 198.18.0.2:80, as the fault layer sees them.
func in(flags uint8, seq, ack uint32, win uint16, payload int) []byte {
	return seg{app4, peer4, 40000, 80, flags, seq, ack, win, payload}.build()
}

func out(flags uint8, seq, ack uint32, win uint16, payload int) []byte {
	return seg{peer4, app4, 80, 40000, flags, seq, ack, win, payload}.build()
}

// testClock is a manual tcpip.Clock whose timers, zero-length ones
// included, fire only in Advance, synchronously and in deadline order.
type testClock struct {
	mu     sync.Mutex
	now    time.Duration
	timers []*testTimer
}

type testTimer struct {
	c     *testClock
	at    time.Duration
	f     func()
	armed bool
}

func (c *testClock) Now() time.Time { return time.Unix(0, 0).Add(c.elapsed()) }

func (c *testClock) NowMonotonic() tcpip.MonotonicTime {
	return tcpip.MonotonicTime{}.Add(time.Hour + c.elapsed())
}

func (c *testClock) elapsed() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) AfterFunc(d time.Duration, f func()) tcpip.Timer {
	t := &testTimer{c: c, f: f}
	t.Reset(d)
	c.mu.Lock()
	c.timers = append(c.timers, t)
	c.mu.Unlock()
	return t
}

func (t *testTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.armed
	t.armed = false
	return was
}

func (t *testTimer) Reset(d time.Duration) {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	t.at, t.armed = t.c.now+max(d, 0), true
}

// Advance moves time by d, firing every timer due on the way (including
// those the timers arm).
func (c *testClock) Advance(d time.Duration) {
	end := c.elapsed() + d
	for {
		c.mu.Lock()
		var next *testTimer
		for _, t := range c.timers {
			if t.armed && t.at <= end && (next == nil || t.at < next.at) {
				next = t
			}
		}
		if next == nil {
			c.now = end
			c.mu.Unlock()
			return
		}
		c.now, next.armed = next.at, false
		c.mu.Unlock()
		next.f()
	}
}
