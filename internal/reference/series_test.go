package reference

import (
	"slices"
	"testing"
	"time"
)

func TestWheelGranularity(t *testing.T) {
	for _, tc := range []struct {
		d, want time.Duration
	}{
		{0, Jiffy},
		{200 * time.Millisecond, Jiffy},
		{252 * time.Millisecond, 8 * Jiffy},
		{time.Second, 8 * Jiffy},
		{2 * time.Second, 8 * Jiffy},
		{3300 * time.Millisecond, 64 * Jiffy},
		{20 * time.Second, 512 * Jiffy},
	} {
		if got := WheelGranularity(tc.d); got != tc.want {
			t.Errorf("WheelGranularity(%v) = %v, want %v", tc.d, got, tc.want)
		}
	}
}

// seriesMS builds a series from times in milliseconds.
func seriesMS(outcome string, at int, errnos []string, ms ...int) Series {
	s := Series{Outcome: outcome, OutcomeAt: time.Duration(at) * time.Millisecond, Errnos: errnos}
	for _, m := range ms {
		s.Times = append(s.Times, time.Duration(m)*time.Millisecond)
		s.Kinds = append(s.Kinds, "retransmit")
	}
	return s
}

// TestCompare: the FACTS series agrees with itself and with small timer
// jitter; each broken mechanism — a retransmission missing, another
// errno, another outcome, a firing moved beyond the wheel's rounding —
// makes it disagree.
func TestCompare(t *testing.T) {
	et := []string{"ETIMEDOUT"}
	ref := seriesMS("ETIMEDOUT", 6650, et, 206, 415, 847, 1677, 3339)
	for _, tc := range []struct {
		name  string
		got   Series
		agree bool
		same  bool // the same mechanism
	}{
		{"same", ref, true, true},
		{"jitter within the wheel", seriesMS("ETIMEDOUT", 6700, et, 209, 418, 860, 1700, 3370), true, true},
		{"one retransmission fewer (the 4th firing ended it)", seriesMS("ETIMEDOUT", 3450, et, 206, 415, 847, 1677), false, false},
		{"one retransmission more", seriesMS("ETIMEDOUT", 13300, et, 206, 415, 847, 1677, 3339, 6650), false, false},
		{"another errno", seriesMS("ECONNRESET", 6650, []string{"ECONNRESET"}, 206, 415, 847, 1677, 3339), false, false},
		// 212 ms instead of 204 stays inside the wheel's rounding for five
		// firings (8, 16, 32, 64, 128 ms late); where it matters it
		// changes which firing ends the connection, the row above.
		{"a base RTO of 212 ms instead of 204", seriesMS("ETIMEDOUT", 6900, et, 215, 430, 880, 1740, 3460), true, true},
		{"a base RTO of 240 ms instead of 204", seriesMS("ETIMEDOUT", 7400, et, 242, 487, 991, 1965, 3915), false, true},
		{"TLP late by 100 ms", seriesMS("ETIMEDOUT", 6750, et, 306, 515, 947, 1777, 3439), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows := Compare(ref, tc.got)
			if Agree(rows) != tc.agree {
				t.Errorf("agree = %v, want %v:\n%s", !tc.agree, tc.agree, FormatRows(rows))
			}
			if SameMechanism(rows) != tc.same {
				t.Errorf("same mechanism = %v, want %v:\n%s", !tc.same, tc.same, FormatRows(rows))
			}
		})
	}
	// A kind changed (a keepalive probe where a retransmission was).
	got := ref
	got.Kinds = slices.Clone(ref.Kinds)
	got.Kinds[2] = "keepalive-probe"
	if SameMechanism(Compare(ref, got)) {
		t.Error("a changed kind had the same mechanism")
	}
}

// TestSeriesOf: T0 is the last packet before the first retransmission or
// probe, and only the client's count.
func TestSeriesOf(t *testing.T) {
	ms := func(v int) time.Duration { return time.Duration(v) * time.Millisecond }
	pkts := []Packet{
		{T: ms(0), Dir: "in", Kind: "new"},  // SYN
		{T: ms(1), Dir: "out", Kind: "new"}, // SYN-ACK
		{T: ms(2), Dir: "in", Kind: "new"},  // ACK
		{T: ms(10), Dir: "in", Kind: "new", Len: 21},
		{T: ms(216), Dir: "in", Kind: "retransmit", Len: 21},
		{T: ms(300), Dir: "out", Kind: "retransmit"}, // the peer's: not counted
		{T: ms(425), Dir: "in", Kind: "retransmit", Len: 21},
	}
	var s Series
	s.seriesOf(pkts)
	if s.T0 != ms(10) || !slices.Equal(s.Times, []time.Duration{ms(206), ms(415)}) {
		t.Fatalf("T0 %v times %v", s.T0, s.Times)
	}
}
