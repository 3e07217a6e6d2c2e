package scenarios

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// tolerance is how far a measured time may lie outside the model's range:
// nothing on the virtual clock (gVisor's timers and the link are exact
// there); on the real one, two jiffies (the timer softirq running late, and
// a retry-limit check that lands a millisecond short and re-fires) plus
// twice the measured RTT, at least 1 ms (the packet reaching the fault
// layer's reader, and the application waking up: the handshake RTT
// already includes that scheduling delay once each way).
func (c Conditions) tolerance() time.Duration {
	if c.Virtual {
		return 0
	}
	return 2*kernelClock{hz: c.hz()}.jiffy() + 2*max(c.RTT, time.Millisecond)
}

// describeClient says what the theory started from, for the basis lines.
func (c Conditions) describeClient() string {
	src := "nominal"
	if c.Measured {
		src = "measured before the fault"
	}
	if c.Kernel {
		return fmt.Sprintf("client RTT %s, RTO %s (%s), HZ=%d", fmtDur(c.RTT), fmtDur(c.RTO), src, c.hz())
	}
	return fmt.Sprintf("gVisor client SRTT %s, RTO %s (%s)", fmtDur(c.RTT), fmtDur(c.RTO), src)
}

// dataPlan is the theory for data sent into a dead link, in the units a
// report measures: times after the send.
type dataPlan struct {
	// Retrans are the retransmissions: index 0 the tail-loss probe, i
	// RTO #i. Each has the range of its time.
	Retrans []firingRange
	// Ends are the firings that may end the connection, most likely first.
	Ends []endOdds
	// Limit is the retry limit (tcp_model_timeout or the user timeout).
	Limit time.Duration
	What  string // "tcp_model_timeout(3)", "TCP_USER_TIMEOUT", "xmitCount > 3"…
}

// planData predicts a segment sent into a dead link by the client the
// conditions describe: with a kernel client tcp_retries2=retries2 (or the
// user timeout u), with gVisor TCPMaxRetriesOption=retries2.
func planData(c Conditions, packetsOut, retries2 int, u time.Duration) dataPlan {
	if c.Kernel {
		k := newKernelSocket(c)
		p := k.predictData(packetsOut, retries2, u)
		plan := dataPlan{Ends: p.Ends, Limit: p.Limit, What: fmt.Sprintf("tcp_model_timeout(%d)", retries2)}
		if u > 0 {
			plan.What = "TCP_USER_TIMEOUT"
		}
		last := 0
		for _, e := range p.Ends {
			last = max(last, e.Firing)
		}
		// Every firing before the last possible end retransmits in some
		// phase; the earliest end bounds the retransmissions that surely
		// go out.
		plan.Retrans = p.Firings[:last]
		if packetsOut > 1 {
			// The probe is new data, not a retransmission of the head.
			plan.Retrans = plan.Retrans[1:]
		}
		return plan
	}
	g := newGVisorSocket(c)
	sched := g.dataSchedule(retries2, u)
	plan := dataPlan{Limit: u, What: fmt.Sprintf("gVisor's xmitCount > %d (TCPMaxRetriesOption)", retries2)}
	if u > 0 {
		plan.What = "gVisor's TCPUserTimeoutOption"
	}
	for i, f := range sched {
		at := time.Duration(f.At)
		if f.Ends {
			e := endOdds{Firing: i, N: f.N, Odds: 1, Lo: at, Hi: at}
			if i >= 2 {
				e.Since1, e.Prev = at-time.Duration(sched[1].At), time.Duration(sched[i-1].At-sched[1].At)
			}
			plan.Ends = []endOdds{e}
			break
		}
		plan.Retrans = append(plan.Retrans, firingRange{Kind: f.Kind, N: f.N, Lo: at, Hi: at})
	}
	return plan
}

// firingName names a retransmission: "TLP" or "RTO #3".
func firingName(f firingRange) string {
	switch f.Kind {
	case fireTLP:
		return "tail-loss probe"
	case "keepalive":
		return fmt.Sprintf("probe #%d", f.N)
	}
	return fmt.Sprintf("RTO #%d", f.N)
}

// endRange is the range of the end times.
func (p dataPlan) endRange() (lo, hi time.Duration) {
	lo = 1 << 62
	for _, e := range p.Ends {
		lo, hi = min(lo, e.Lo), max(hi, e.Hi)
	}
	return lo, hi
}

// likely is the most likely end.
func (p dataPlan) likely() endOdds { return p.Ends[0] }

// describeEnds says which firing ends the connection and why.
func (p dataPlan) describeEnds() string {
	var parts []string
	for _, e := range p.Ends {
		s := fmt.Sprintf("ended at RTO #%d: %s since RTO #1 ≥ %s", e.N, fmtSecs(e.Since1), fmtSecs(p.Limit))
		if e.N > 2 {
			s += fmt.Sprintf("; RTO #%d at %s was short", e.N-1, fmtSecs(e.Prev))
		}
		if p.Limit == 0 {
			s = fmt.Sprintf("ended at RTO #%d, after %d retransmissions", e.N, e.Firing)
		}
		if len(p.Ends) > 1 {
			s = fmt.Sprintf("%.0f%%: %s", 100*e.Odds, s)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " | ")
}

// clientSeries returns the client's retransmissions of the segment
// retransmitted most often (the one the theory is about), in time order.
func clientSeries(r *Report, kinds string) []Retransmission { return longestSeries(r, "in", kinds) }

// longestSeries returns the retransmissions in direction dir of the
// segment retransmitted most often, in time order.
func longestSeries(r *Report, dir, kinds string) []Retransmission {
	type key struct {
		conn int
		seq  uint32
	}
	series := map[key][]Retransmission{}
	var best key
	for _, x := range r.Retransmissions {
		if x.Dir != dir || !kindIn(x.Kind, kinds) {
			continue
		}
		k := key{x.Conn, x.Seq}
		series[k] = append(series[k], x)
		if len(series[k]) > len(series[best]) {
			best = k
		}
	}
	return series[best]
}

// firstErrno is when the application first got errno name.
func firstErrno(r *Report, name string) (time.Duration, bool) {
	for _, e := range r.AppErrors {
		if e.Errno == name {
			return e.T, true
		}
	}
	return 0, false
}

// endCheck is the mechanism row: which firing ended the connection,
// counted as the retransmissions before errno (the TLP is the first, RTO #i
// the (i+1)th, so the firing that ends it is RTO #count). Exact: the
// accepted values are the possible ends' RTO numbers.
func endCheck(plan dataPlan, errno string, c Conditions) Check {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, e := range plan.Ends {
		lo, hi = math.Min(lo, float64(e.N)), math.Max(hi, float64(e.N))
	}
	return Check{Name: "ending firing", Unit: "count", Want: float64(plan.likely().N), Min: lo, Max: hi,
		TheoryText: plan.describeEnds(),
		Basis: fmt.Sprintf("the connection ends at an RTO firing, not in between: %s decides at each firing (%s)",
			plan.What, c.describeClient()),
		measure: func(r *Report) (float64, bool) {
			at, ok := firstErrno(r, errno)
			if !ok {
				return 0, false
			}
			n := 0
			for _, x := range clientSeries(r, "retransmit") {
				if x.T <= at {
					n++
				}
			}
			return float64(n), true
		},
		explain: func(r *Report, got float64) string {
			at, _ := firstErrno(r, errno)
			s := clientSeries(r, "retransmit")
			n := int(got)
			if n < 2 || len(s) < n {
				return fmt.Sprintf("ended at RTO #%d (%d retransmissions)", n, n)
			}
			rto1 := s[1].T
			return fmt.Sprintf("ended at RTO #%d: %s since RTO #1; RTO #%d at %s", n, fmtSecs(at-rto1), n-1, fmtSecs(s[n-1].T-rto1))
		}}
}

// scheduleCheck is the timing row for a series of retransmissions: each
// measured one (after the anchor) must lie in its firing's range, widened
// by the tolerance. It measures the worst excess in seconds (0 = all in
// range). offset is added to the model's times (the link delay before
// the fault layer sees a packet).
func scheduleCheck(name string, want []firingRange, offset, tol time.Duration, basis string) Check {
	return seriesCheck(name, "retransmit", want, offset, tol, basis)
}

// seriesCheck is scheduleCheck for the client's retransmissions or probes
// of the given kinds.
func seriesCheck(name, kinds string, want []firingRange, offset, tol time.Duration, basis string) Check {
	worst := func(r *Report) (float64, int, time.Duration) {
		got := clientSeries(r, kinds)
		var excess time.Duration
		idx, dev := -1, time.Duration(0)
		for i := 0; i < len(got) && i < len(want); i++ {
			t := got[i].T - r.Anchor
			lo, hi := want[i].Lo+offset-tol, want[i].Hi+offset+tol
			var d time.Duration
			switch {
			case t < lo:
				d = lo - t
				if d > excess {
					excess, idx, dev = d, i, -d
				}
			case t > hi:
				d = t - hi
				if d > excess {
					excess, idx, dev = d, i, d
				}
			}
		}
		return excess.Seconds(), idx, dev
	}
	var names []string
	for i, f := range want {
		if i >= 6 {
			names = append(names, "…")
			break
		}
		if f.Lo == f.Hi {
			names = append(names, fmt.Sprintf("%.3f", (f.Lo+offset).Seconds()))
		} else {
			names = append(names, fmt.Sprintf("%.3f–%.3f", (f.Lo+offset).Seconds(), (f.Hi+offset).Seconds()))
		}
	}
	text := "at " + strings.Join(names, ", ") + " s"
	if tol > 0 {
		text += fmt.Sprintf(" (± %s)", fmtDur(tol))
	} else {
		text += " exactly"
	}
	return Check{Name: name, Unit: "s", Want: 0, Min: 0, Max: 0, Timing: true, Basis: basis, TheoryText: text,
		measure: func(r *Report) (float64, bool) {
			if len(clientSeries(r, kinds)) == 0 {
				return 0, false
			}
			v, _, _ := worst(r)
			return v, true
		},
		explain: func(r *Report, got float64) string {
			_, idx, dev := worst(r)
			if idx < 0 {
				return "every one in its range"
			}
			dir := "late"
			if dev < 0 {
				dev, dir = -dev, "early"
			}
			return fmt.Sprintf("%s %s %s", firingName(want[idx]), fmtDur(dev), dir)
		}}
}
