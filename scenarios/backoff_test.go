package scenarios

import (
	"testing"
	"time"
)

func TestTimerIntervals(t *testing.T) {
	k := kernelClock{hz: 250} // 4 ms jiffies
	for _, tc := range []struct {
		step   time.Duration
		lo, hi time.Duration
	}{
		// 51 jiffies: level 0, fires the jiffy after expiry; up to 2 late.
		{204 * time.Millisecond, 208 * time.Millisecond, 216 * time.Millisecond},
		// 102 jiffies: level 1, rounded up to 8 jiffies.
		{408 * time.Millisecond, 412 * time.Millisecond, 448 * time.Millisecond},
		// 250 jiffies (a SYN's 1 s): level 1.
		{time.Second, 1004 * time.Millisecond, 1040 * time.Millisecond},
		// 1000 jiffies: level 2, rounded up to 64 jiffies (256 ms).
		{4 * time.Second, 4004 * time.Millisecond, 4264 * time.Millisecond},
	} {
		got := k.timerIntervals([]time.Duration{tc.step})[0]
		if got.lo != tc.lo || got.hi != tc.hi {
			t.Errorf("step %s: interval %s–%s, want %s–%s", tc.step, got.lo, got.hi, tc.lo, tc.hi)
		}
	}
}

func TestBackoffBounds(t *testing.T) {
	exact := func(steps ...time.Duration) []span {
		out := make([]span, len(steps))
		for i, s := range steps {
			out[i] = span{s, s}
		}
		return out
	}
	s := time.Second
	for _, tc := range []struct {
		name           string
		iv             []span
		tol            time.Duration
		skip, nLo, nHi int
		lo, hi         float64
		ok             bool
	}{
		{"exact doubling, no tolerance", exact(s, 2*s, 4*s), 0, 0, 3, 3, 2, 2, true},
		// Ratios (2s−10ms)/(1s+10ms) = 1.970… and (2s+10ms)/(1s−10ms) =
		// 2.030…, rounded outwards.
		{"one ratio, ±10 ms", exact(s, 2*s), 10 * time.Millisecond, 0, 2, 2, 1.97, 2.04, true},
		// The first ratio skipped: only 4/2 counts.
		{"skip the first", []span{{s / 2, 3 * s / 2}, {2 * s, 2 * s}, {4 * s, 4 * s}}, 0, 1, 3, 3, 2, 2, true},
		// Without the skip the loose first interval widens the median of
		// two ratios: (4/3 + 2)/2 … (4 + 2)/2.
		{"loose first interval", []span{{s / 2, 3 * s / 2}, {2 * s, 2 * s}, {4 * s, 4 * s}}, 0, 0, 3, 3, 1.66, 3, true},
		// A count range takes the widest median: with 2 packets the
		// one ratio, with 4 the median of three.
		{"count range", []span{{s, s}, {2 * s, 2 * s}, {3 * s, 5 * s}, {8 * s, 8 * s}}, 0, 0, 2, 4, 1.6, 2.5, true},
		{"nothing after the skip", exact(s, 2*s), 0, 1, 2, 2, 0, 0, false},
		{"fewer intervals than packets", exact(s, 2*s), 0, 0, 5, 5, 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lo, hi, ok := backoffBounds(tc.iv, tc.tol, tc.skip, tc.nLo, tc.nHi)
			if ok != tc.ok || (ok && (lo != tc.lo || hi != tc.hi)) {
				t.Errorf("backoffBounds = %.3f, %.3f, %v; want %.3f, %.3f, %v", lo, hi, ok, tc.lo, tc.hi, tc.ok)
			}
		})
	}
}
