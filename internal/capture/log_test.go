package capture

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack/fault"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func TestLoggerLines(t *testing.T) {
	ms := func(n float64) time.Time { return base.Add(time.Duration(n * float64(time.Millisecond))) }
	pass := fault.Decision{}
	drop1 := fault.Decision{Verdict: fault.Dropped, Rule: 1}

	v6 := func(seq, ackn uint32, flags header.TCPFlags, n int) seg {
		return seg{src: app6, dst: peer6, sport: 40001, dport: 443, seq: seq, ack: ackn, flags: flags, win: 65535, payload: n}
	}
	v6peer := func(seq, ackn uint32, flags header.TCPFlags, win uint16) seg {
		return seg{src: peer6, dst: app6, sport: 443, dport: 40001, seq: seq, ack: ackn, flags: flags, win: win}
	}
	frag := seg{src: app4, dst: peer4, sport: 1, dport: 2, flags: ack, payload: 8}.build()
	frag[6], frag[7] = 0, 8 // fragment offset 64: no TCP header

	tests := []struct {
		at   time.Time
		dir  packet.Direction
		data []byte
		d    fault.Decision
		want string
	}{
		// IPv4 handshake, absolute numbers on SYNs.
		{ms(0), packet.In, client(1000, 0, syn, 0).build(), pass,
			"0.000000 in  198.18.0.1:40000 > 198.18.0.2:80 [S] seq 1000, win 502, length 0, pass"},
		{ms(0.12), packet.Out, server(5000, 1001, syn|ack, 0, 65535).build(), pass,
			"0.000120 out 198.18.0.2:80 > 198.18.0.1:40000 [S.] seq 5000, ack 1001, win 65535, length 0, pass"},
		// Relative from here on.
		{ms(0.2), packet.In, client(1001, 5001, ack, 0).build(), pass,
			"0.000200 in  198.18.0.1:40000 > 198.18.0.2:80 [.] seq 1, ack 1, win 502, length 0, pass"},
		{ms(0.3), packet.In, client(1001, 5001, psh|ack, 100).build(), drop1,
			"0.000300 in  198.18.0.1:40000 > 198.18.0.2:80 [P.] seq 1:101, ack 1, win 502, length 100, drop rule 1"},
		{ms(200.3), packet.In, client(1001, 5001, psh|ack, 100).build(), drop1,
			"0.200300 in  198.18.0.1:40000 > 198.18.0.2:80 [P.] seq 1:101, ack 1, win 502, length 100, drop rule 1 RETRANSMIT"},
		{ms(1500), packet.Out, server(5001, 1101, ack, 0, 65535).build(),
			fault.Decision{Verdict: fault.Delayed, Rule: 2, Delay: 250 * time.Millisecond},
			"1.500000 out 198.18.0.2:80 > 198.18.0.1:40000 [.] seq 1, ack 101, win 65535, length 0, delay 250ms rule 2"},
		{ms(2000), packet.In, client(1100, 5001, ack, 0).build(), pass,
			"2.000000 in  198.18.0.1:40000 > 198.18.0.2:80 [.] seq 100, ack 1, win 502, length 0, pass KEEPALIVE"},
		{ms(2100), packet.In, client(1101, 5001, rst|ack, 0).build(), pass,
			"2.100000 in  198.18.0.1:40000 > 198.18.0.2:80 [R.] seq 101, ack 1, win 502, length 0, pass"},
		// IPv6, ECN flags, a zero window and its probe.
		{ms(3000), packet.In, v6(7, 0, syn|header.TCPFlagEce|header.TCPFlagCwr, 0).build(), pass,
			"3.000000 in  [fd00:198:18::1]:40001 > [fd00:198:18::2]:443 [SEW] seq 7, win 65535, length 0, pass"},
		{ms(3100), packet.Out, v6peer(100, 8, syn|ack, 0).build(), pass,
			"3.100000 out [fd00:198:18::2]:443 > [fd00:198:18::1]:40001 [S.] seq 100, ack 8, win 0, length 0, pass"},
		{ms(3200), packet.In, v6(8, 101, ack, 1).build(), pass,
			"3.200000 in  [fd00:198:18::1]:40001 > [fd00:198:18::2]:443 [.] seq 1:2, ack 1, win 65535, length 1, pass"},
		{ms(3300), packet.In, v6(8, 101, ack, 1).build(), pass,
			"3.300000 in  [fd00:198:18::1]:40001 > [fd00:198:18::2]:443 [.] seq 1:2, ack 1, win 65535, length 1, pass ZERO-WINDOW-PROBE"},
		{ms(3400), packet.Out, v6peer(101, 8, fin|psh|ack, 0).build(), fault.Decision{Verdict: fault.Dropped},
			"3.400000 out [fd00:198:18::2]:443 > [fd00:198:18::1]:40001 [FP.] seq 1, ack 1, win 0, length 0, drop"},
		// Joined mid-stream: the first seq seen is 1.
		{ms(3500), packet.Out, seg{src: peer4, dst: app4, sport: 80, dport: 40002, seq: 900000, ack: 77, flags: psh | ack, win: 100, payload: 10}.build(), pass,
			"3.500000 out 198.18.0.2:80 > 198.18.0.1:40002 [P.] seq 1:11, ack 1, win 100, length 10, pass"},
		{ms(3600), packet.Out, seg{src: peer4, dst: app4, sport: 80, dport: 40002, seq: 900010, flags: 0, win: 100}.build(), pass,
			"3.600000 out 198.18.0.2:80 > 198.18.0.1:40002 [none] seq 11, win 100, length 0, pass"},
		// Other protocols and oddities.
		{ms(4000), packet.In, udpPacket(app4, peer4, 5353, 53, 20), pass,
			"4.000000 in  198.18.0.1:5353 > 198.18.0.2:53 UDP, length 20, pass"},
		{ms(4500), packet.Out, icmpEcho4(peer4, app4, 56), fault.Decision{Verdict: fault.Dropped, Rule: 3},
			"4.500000 out 198.18.0.2 > 198.18.0.1 ICMP, length 84, drop rule 3"},
		{ms(4600), packet.Out, func() []byte {
			p, _ := ipHeader(peer6, app6, header.ICMPv6ProtocolNumber, 8)
			return p
		}(), pass,
			"4.600000 out fd00:198:18::2 > fd00:198:18::1 ICMP6, length 48, pass"},
		{ms(4700), packet.In, func() []byte {
			p, _ := ipHeader(app4, peer4, 47, 4) // GRE
			return p
		}(), pass,
			"4.700000 in  198.18.0.1 > 198.18.0.2 proto 47, length 24, pass"},
		{ms(4800), packet.In, frag, pass,
			"4.800000 in  198.18.0.1 > 198.18.0.2 fragment, proto 6, length 48, pass"},
		{ms(5000), packet.In, []byte{0x00, 1, 2}, pass,
			"5.000000 in  unparseable, length 3, pass"},
		{ms(-1500), packet.In, udpPacket(app4, peer4, 1, 2, 0), pass,
			"-1.500000 in  198.18.0.1:1 > 198.18.0.2:2 UDP, length 0, pass"},
		{base.Add(3723*time.Second + time.Microsecond + 999*time.Nanosecond), packet.Out, udpPacket(peer4, app4, 2, 1, 1), pass,
			"3723.000001 out 198.18.0.2:2 > 198.18.0.1:1 UDP, length 1, pass"},
	}
	var buf bytes.Buffer
	l := NewLogger(&buf, base)
	for _, tt := range tests {
		l.Observe(event(t, tt.at, tt.dir, tt.data, tt.d, ""))
	}
	l.Observe(&fault.Event{Time: base, Data: []byte{0x45}}) // no parsed view
	l.Observe(nil)
	want := make([]string, 0, len(tests)+1)
	for _, tt := range tests {
		want = append(want, tt.want)
	}
	want = append(want, "0.000000 ?   unparseable, length 1, pass")

	got := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	for i := range max(len(got), len(want)) {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			t.Errorf("line %d:\n got: %s\nwant: %s", i, g, w)
		}
	}
	if err := l.Flush(); err != nil {
		t.Errorf("Flush: %v", err)
	}
}

func TestAppendDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0"},
		{250 * time.Microsecond, "250us"},
		{1500 * time.Microsecond, "1.5ms"},
		{200 * time.Millisecond, "200ms"},
		{1500 * time.Millisecond, "1.5s"},
		{2 * time.Minute, "120s"},
		{500 * time.Nanosecond, "0.5us"},
	}
	for _, tt := range tests {
		if got := string(appendDuration(nil, tt.d)); got != tt.want {
			t.Errorf("appendDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

type errWriter struct{ calls int }

func (e *errWriter) Write(p []byte) (int, error) { e.calls++; return 0, errDiskFull }

func TestLoggerStopsAfterWriteError(t *testing.T) {
	ew := &errWriter{}
	l := NewLogger(ew, base)
	evs := sampleEvents(t)
	for _, ev := range evs {
		l.Observe(ev)
	}
	if ew.calls != 1 {
		t.Errorf("%d writes after the first failure, want 1 in all", ew.calls)
	}
	if !errors.Is(l.Err(), errDiskFull) || !errors.Is(l.Flush(), errDiskFull) {
		t.Errorf("Err = %v, Flush = %v; want the write error", l.Err(), l.Flush())
	}
}

func TestLoggerFlushesBufferedWriter(t *testing.T) {
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	l := NewLogger(bw, base)
	var wg sync.WaitGroup
	evs := sampleEvents(t)
	for range 4 {
		wg.Go(func() {
			for range 25 {
				for _, ev := range evs {
					l.Observe(ev)
				}
				if err := l.Flush(); err != nil {
					t.Errorf("Flush: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n, want := strings.Count(out.String(), "\n"), 4*25*len(evs); n != want {
		t.Errorf("%d lines after Flush, want %d", n, want)
	}
	if n := strings.Count(out.String(), " RETRANSMIT"); n == 0 {
		t.Error("repeated segments were never marked RETRANSMIT")
	}
}

func TestLoggerDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	var buf bytes.Buffer
	buf.Grow(1 << 20)
	l := NewLogger(&buf, base)
	evs := sampleEvents(t)
	v6 := event(t, base, packet.In, seg{src: app6, dst: peer6, sport: 1, dport: 2, seq: 1, flags: ack | psh, win: 1, payload: 10}.build(),
		fault.Decision{Verdict: fault.Delayed, Rule: 4, Delay: 1500 * time.Microsecond}, "")
	evs = append(evs, v6)
	for _, ev := range evs { // warm up: flows and line buffer
		l.Observe(ev)
	}
	allocs := testing.AllocsPerRun(50, func() {
		buf.Reset()
		for _, ev := range evs {
			l.Observe(ev)
		}
	})
	if allocs != 0 {
		t.Errorf("Observe allocates %.1f times per %d packets, want 0", allocs, len(evs))
	}
}
