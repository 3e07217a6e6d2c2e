package tun

import (
	"bytes"
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// segmentsOf cuts payload into complete (checksummed) segments of mss
// bytes starting at seq, with flags on each and last on the final one.
func segmentsOf(v6 bool, seq uint32, mss int, payload []byte, flags, last uint8) [][]byte {
	var out [][]byte
	for off := 0; off < len(payload); off += mss {
		n := min(mss, len(payload)-off)
		f := flags
		if off+n == len(payload) {
			f = last
		}
		out = append(out, buildTCP(v6, seq+uint32(off), f, uint16(100+len(out)), payload[off:off+n], false))
	}
	return out
}

// TestCoalesceRoundTrip merges runs the way WriteBatch does and checks that
// splitting the super-packet, as the kernel would, gives back the segments.
func TestCoalesceRoundTrip(t *testing.T) {
	const mss = 1000
	for _, tt := range []struct {
		name string
		v6   bool
		size int
		last uint8
	}{
		{"v4 short tail pushed", false, 5*mss + 10, tcpACK | tcpPSH},
		{"v4 exact", false, 3 * mss, tcpACK},
		{"v6", true, 4*mss + 1, tcpACK | tcpPSH},
	} {
		t.Run(tt.name, func(t *testing.T) {
			segs := segmentsOf(tt.v6, 5000, mss, pattern(tt.size), tcpACK, tt.last)
			if n := coalescable(segs); n != len(segs) {
				t.Fatalf("coalescable = %d, want all %d", n, len(segs))
			}
			hdr, g := mergeHeader(make([]byte, maxHeaderLen), segs)
			super := append([]byte(nil), hdr...)
			for _, s := range segs {
				super = append(super, s[len(hdr):]...)
			}
			// mergeHeader leaves the partial checksum a NEEDS_CSUM packet
			// carries; completing it must give a valid super-packet.
			full := bytes.Clone(super)
			if err := CompleteChecksum(full, g); err != nil {
				t.Fatal(err)
			}
			checkValid(t, full)
			var scratch [maxHeaderLen]byte
			i := 0
			err := SplitTCP(super, g, scratch[:], true, func(s TCPSegment) error {
				got := s.Segment(nil, super)
				want := bytes.Clone(segs[i])
				if !tt.v6 { // the kernel numbers IPv4 ids from the first
					binary.BigEndian.PutUint16(want[4:], 100+uint16(i))
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("segment %d differs:\n got % x\nwant % x", i, got[:60], want[:60])
				}
				i++
				return nil
			})
			if err != nil || i != len(segs) {
				t.Fatalf("SplitTCP: %v after %d of %d segments", err, i, len(segs))
			}
		})
	}
}

// TestCoalescableStops lists what must end a run.
func TestCoalescableStops(t *testing.T) {
	base := func() [][]byte { return segmentsOf(false, 1, 1000, pattern(3000), tcpACK, tcpACK) }
	edit := func(i int, f func(p []byte)) [][]byte {
		s := base()
		f(s[i])
		// keep the edited packet's checksums meaningful for the reader
		ip := header.IPv4(s[i])
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		return s
	}
	tcpOff := 20
	for _, tt := range []struct {
		name string
		pkts [][]byte
		want int
	}{
		{"all", base(), 3},
		{"push ends the run", edit(1, func(p []byte) { p[tcpOff+13] |= tcpPSH }), 2},
		{"push on the first", edit(0, func(p []byte) { p[tcpOff+13] |= tcpPSH }), 1},
		{"FIN", edit(1, func(p []byte) { p[tcpOff+13] |= tcpFIN }), 1},
		{"SYN first", edit(0, func(p []byte) { p[tcpOff+13] = tcpSYN | tcpACK }), 1},
		{"sequence gap", edit(1, func(p []byte) { binary.BigEndian.PutUint32(p[tcpOff+4:], 99999) }), 1},
		{"other port", edit(2, func(p []byte) { p[tcpOff+1]++ }), 2},
		{"other ack", edit(1, func(p []byte) { p[tcpOff+11]++ }), 1},
		{"other window", edit(1, func(p []byte) { p[tcpOff+15]++ }), 1},
		{"other timestamp", edit(1, func(p []byte) { p[tcpOff+20+7]++ }), 1},
		{"other TTL", edit(1, func(p []byte) { p[8]-- }), 1},
		{"IPv4 fragment", edit(0, func(p []byte) { p[6] |= 0x20 }), 1},
		{"single packet", base()[:1], 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := coalescable(tt.pkts); got != tt.want {
				t.Fatalf("coalescable = %d, want %d", got, tt.want)
			}
		})
	}
	// A longer segment after a short one cannot join: every segment but
	// the last must be as long as the first.
	short := segmentsOf(false, 1, 1000, pattern(1500), tcpACK, tcpACK) // 1000 + 500
	more := buildTCP(false, 1501, tcpACK, 9, pattern(1000), false)
	if got := coalescable(append(short, more)); got != 2 {
		t.Fatalf("run after a short segment: coalescable = %d, want 2", got)
	}
	// 64 KiB at most.
	big := segmentsOf(false, 1, 1400, pattern(100*1400), tcpACK, tcpACK)
	n := coalescable(big)
	if size := 52 + n*1400; n < 2 || size > MaxOffloadSize || size+1400 <= MaxOffloadSize {
		t.Fatalf("coalescable over 140 KB = %d segments (%d bytes), want the most that fit in %d", n, size, MaxOffloadSize)
	}
}
