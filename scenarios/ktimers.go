package scenarios

import (
	"fmt"
	"sort"
	"time"
)

// The Linux kernel's timer arithmetic, as far as a TCP retransmission or
// keepalive timer goes (kernel/time/timer.c, net/ipv4/tcp_timer.c,
// tcp_output.c): timers count jiffies (1/HZ s), and the timer wheel files a
// timer due in more than 62 jiffies in a coarser bucket, rounding its expiry
// up to 8, 64, 512… jiffies. So when exactly a 3.3 s RTO fires depends on
// the jiffies counter's value when it was armed, which user space cannot
// see: the model runs every possible value and reports the range.

// Timer wheel geometry (kernel/time/timer.c): LVL_CLK_SHIFT 3, LVL_BITS 6.
const (
	wheelClkShift = 3
	wheelLevels   = 9
)

// wheelLevelStart is LVL_START(n): the smallest delta filed at level n.
func wheelLevelStart(n int) int64 { return 63 << (wheelClkShift * (n - 1)) }

// wheelFire returns the jiffy at which a timer armed at jiffy at for delta
// jiffies fires: calc_wheel_index picks the level from delta and
// calc_index rounds the expiry up to that level's granularity, always by
// at least one jiffy, so a timer never fires early.
func wheelFire(at, delta int64) int64 {
	lvl := 0
	for lvl+1 < wheelLevels && delta >= wheelLevelStart(lvl+1) {
		lvl++
	}
	shift := uint(wheelClkShift * lvl)
	return ((at+delta)>>shift + 1) << shift
}

// timerLate is how many jiffies late the model lets a timer handler run
// (and re-arm): with NOHZ an idle CPU's tick and the timer softirq can lag
// the bucket's jiffy. Measured on Linux 6.18: a 2 s SYN timer armed from a
// firing came 2.024 s later where an on-time handler gives 2.016 s.
const timerLate = 2

// wheelPhases is how many values of the jiffies counter (mod the coarsest
// granularity a TCP timer reaches) the model tries: level 4's 4096 jiffies
// covers a 120 s RTO at HZ up to 1000.
const wheelPhases = 4096

// kernelClock is the kernel's jiffy.
type kernelClock struct{ hz int }

// jiffy is one tick.
func (k kernelClock) jiffy() time.Duration { return time.Second / time.Duration(k.hz) }

// jiffies converts d to jiffies rounding up, like usecs_to_jiffies.
func (k kernelClock) jiffies(d time.Duration) int64 {
	j := k.jiffy()
	return int64((d + j - 1) / j)
}

// dur converts jiffies to a duration.
func (k kernelClock) dur(j int64) time.Duration { return time.Duration(j) * k.jiffy() }

// kernelSocket is what the model knows about the client socket before the
// fault: its smoothed RTT and RTO (TCP_INFO's tcpi_rtt, tcpi_rto) and HZ.
type kernelSocket struct {
	kernelClock
	rtt time.Duration
	rto int64 // jiffies
}

// newKernelSocket builds the model from the conditions; without an RTO
// it is the one the kernel derives from the RTT (kernelRTO).
func newKernelSocket(c Conditions) kernelSocket {
	k := kernelSocket{kernelClock: kernelClock{hz: c.hz()}, rtt: c.RTT}
	rto := c.RTO
	if rto <= 0 {
		rto = kernelRTO(c.hz(), c.RTT)
	}
	k.rto = k.jiffies(rto)
	return k
}

// Firing kinds.
const (
	fireTLP = "TLP"
	fireRTO = "RTO"
)

// dataFiring is one firing of the retransmission timers of a segment sent
// into a dead link.
type dataFiring struct {
	Kind string // fireTLP or fireRTO
	N    int    // RTO number, from 1 (0 for the TLP)
	At   int64  // jiffies after the jiffy the send happened in
	// Ends means this firing ends the connection (ETIMEDOUT) instead of
	// retransmitting; Boundary means the retry limit is within a
	// millisecond of this firing, so it may or may not.
	Ends, Boundary bool
	// late is At when every handler runs timerLate jiffies late.
	late int64
}

// dataSchedule simulates the timers of data sent at jiffy start into a
// dead link, packetsOut segments in flight: the tail-loss probe
// (tcp_schedule_loss_probe: 2·RTT plus 200 ms for one segment, plus 2
// ms for more, but never after the RTO; with more segments it sends new
// data if there is some), then the RTO, restarted from the probe
// (tcp_retransmit_timer), doubling up to 120 s. With a user timeout u the
// RTO is clamped to what is left of it (tcp_clamp_rto_to_user_timeout).
// Each RTO firing after the first checks retransmits_timed_out: ETIMEDOUT
// when the time since the first RTO retransmission (retrans_stamp; the TLP
// does not set it) reaches tcp_model_timeout(retries2) (or u). It stops at
// the firing that ends the connection, or after maxFirings firings.
func (k kernelSocket) dataSchedule(start, late int64, packetsOut, retries2 int, u time.Duration, maxFirings int) []dataFiring {
	var out []dataFiring
	// The probe timeout is computed in microseconds, then rounded up to
	// jiffies.
	tlpTimeout := 2*k.rtt + 2*time.Millisecond // TCP_TIMEOUT_MIN_US
	if packetsOut == 1 {
		tlpTimeout = 2*k.rtt + kernelRTOMin
	}
	tlp := k.jiffies(tlpTimeout)
	tlp = min(tlp, k.rto)
	now := wheelFire(start, tlp) + late
	out = append(out, dataFiring{Kind: fireTLP, At: now - start})
	rto, rtoMax := k.rto, k.jiffies(kernelRTOMax)
	// tcp_send_loss_probe restarts the RTO from the probe.
	now = wheelFire(now, rto) + late
	first := now
	limit := float64(retries2Boundary(retries2).Milliseconds())
	if u > 0 {
		limit = float64(u.Milliseconds())
	}
	jms := float64(k.jiffy()) / float64(time.Millisecond)
	for n := 1; len(out) < maxFirings; n++ {
		f := dataFiring{Kind: fireRTO, N: n, At: now - start}
		if n > 1 {
			elapsed := float64(now-first) * jms // ms since retrans_stamp
			switch {
			case elapsed >= limit+1:
				f.Ends = true
			case elapsed > limit-1:
				f.Boundary = true // tcp_time_stamp_ms truncation decides
			}
		}
		out = append(out, f)
		if f.Ends {
			return out
		}
		rto = min(2*rto, rtoMax)
		next := rto
		if u > 0 {
			left := u - time.Duration(float64(now-first)*jms*float64(time.Millisecond))
			if left <= 0 {
				next = 1
			} else {
				next = min(next, k.jiffies(left))
			}
		}
		now = wheelFire(now, next) + late
	}
	return out
}

// endOdds is one way a dead connection can end.
type endOdds struct {
	// Firing is the index (in the schedule) of the firing that ends it:
	// the retransmissions before it are Firing (TLP included).
	Firing int
	N      int     // its RTO number
	Odds   float64 // fraction of timer phases that end here
	// Lo, Hi bound its time after the send.
	Lo, Hi time.Duration
	// Since1 is its time after RTO #1 (the midpoint over phases); Prev
	// the previous RTO's, which was short of the limit.
	Since1, Prev time.Duration
}

// firingRange is the range, over timer phases, of one firing's time after
// the send.
type firingRange struct {
	Kind   string
	N      int
	Lo, Hi time.Duration
}

// dataPrediction is the kernel theory for data sent into a dead link.
type dataPrediction struct {
	Ends     []endOdds     // most likely first
	Firings  []firingRange // every firing up to the last possible end
	Limit    time.Duration // the retries2 boundary or user timeout
	UserTime bool
}

// predictData runs dataSchedule over every timer phase. A firing on the
// boundary counts half for ending there and half for the next firing.
func (k kernelSocket) predictData(packetsOut, retries2 int, u time.Duration) dataPrediction {
	type acc struct {
		n       float64
		lo, hi  time.Duration
		since1  time.Duration
		prev    time.Duration
		samples int
		rto     int
	}
	ends := map[int]*acc{}
	var ranges []firingRange
	note := func(i int, kind string, n int, at time.Duration) {
		for len(ranges) <= i {
			ranges = append(ranges, firingRange{Lo: 1 << 62})
		}
		r := &ranges[i]
		r.Kind, r.N = kind, n
		// The send happened somewhere in its jiffy: up to one jiffy
		// earlier than the jiffy's start the schedule counts from.
		r.Lo, r.Hi = min(r.Lo, at-k.jiffy()), max(r.Hi, at)
	}
	add := func(idx int, f []dataFiring, w float64) {
		a := ends[idx]
		if a == nil {
			a = &acc{lo: 1 << 62}
			ends[idx] = a
		}
		at := k.dur(f[idx].At)
		a.n += w
		a.lo, a.hi = min(a.lo, at-k.jiffy()), max(a.hi, at, k.dur(f[idx].late))
		a.since1 += k.dur(f[idx].At - f[1].At)
		a.prev += k.dur(f[idx-1].At - f[1].At)
		a.samples++
		a.rto = f[idx].N
	}
	const maxFirings = 64
	for phase := int64(0); phase < wheelPhases; phase++ {
		sched := k.dataSchedule(phase, 0, packetsOut, retries2, u, maxFirings)
		for i, f := range sched {
			note(i, f.Kind, f.N, k.dur(f.At))
		}
		// Handlers running late move the times, not the decision.
		for i, f := range k.dataSchedule(phase, timerLate, packetsOut, retries2, u, maxFirings) {
			if i < len(sched) {
				note(i, f.Kind, f.N, k.dur(f.At))
				sched[i].late = f.At
			}
		}
		last := len(sched) - 1
		if !sched[last].Ends {
			continue // beyond maxFirings: not a case that happens
		}
		for i, f := range sched {
			if f.Boundary {
				add(i, sched, 0.5)
				// the other half ends later: at the last firing
				add(last, sched, 0.5)
				goto next
			}
		}
		add(last, sched, 1)
	next:
	}
	p := dataPrediction{Firings: ranges, Limit: retries2Boundary(retries2), UserTime: u > 0}
	if u > 0 {
		p.Limit = u
	}
	for idx, a := range ends {
		p.Ends = append(p.Ends, endOdds{Firing: idx, N: a.rto, Odds: a.n / wheelPhases, Lo: a.lo, Hi: a.hi,
			Since1: a.since1 / time.Duration(a.samples), Prev: a.prev / time.Duration(a.samples)})
	}
	sort.Slice(p.Ends, func(i, j int) bool {
		if p.Ends[i].Odds != p.Ends[j].Odds {
			return p.Ends[i].Odds > p.Ends[j].Odds
		}
		return p.Ends[i].Firing < p.Ends[j].Firing
	})
	if len(p.Ends) > 0 {
		lastEnd := 0
		for _, e := range p.Ends {
			lastEnd = max(lastEnd, e.Firing)
		}
		p.Firings = p.Firings[:lastEnd+1]
	}
	return p
}

// fmtSecs prints d as seconds with 3 decimals, without a space: "2.912 s".
func fmtSecs(d time.Duration) string { return fmt.Sprintf("%.3f s", d.Seconds()) }

// keepaliveEnd predicts keepalive on an idle connection into a dead link
// (tcp_keepalive_timer): the timer, armed when the connection was
// established, fires after idle, finds the connection idle that long since
// the last packet received and sends a probe; every intvl another; the
// firing after count unanswered probes ends it. It returns the range of
// probe and end times after the jiffy the timer was armed in, over timer
// phases.
func (k kernelClock) keepaliveEnd(idle, intvl time.Duration, count int) (probes []firingRange, end firingRange) {
	probes = make([]firingRange, count)
	for i := range probes {
		probes[i] = firingRange{Kind: "keepalive", N: i + 1, Lo: 1 << 62}
	}
	end = firingRange{Kind: "end", Lo: 1 << 62}
	ji, jv := k.jiffies(idle), k.jiffies(intvl)
	for phase := int64(0); phase < wheelPhases; phase++ {
		for _, late := range []int64{0, timerLate} {
			now := wheelFire(phase, ji) + late
			for i := 0; i <= count; i++ {
				at := k.dur(now - phase)
				r := &end
				if i < count {
					r = &probes[i]
				}
				r.Lo, r.Hi = min(r.Lo, at-k.jiffy()), max(r.Hi, at)
				now = wheelFire(now, jv) + late
			}
		}
	}
	return probes, end
}

// span is a range of durations, both ends included.
type span struct{ lo, hi time.Duration }

// timerIntervals is, for each of steps, the range of the interval between
// two firings of a timer re-armed at each firing for that step: the wheel
// rounds the expiry up to its level's granularity (by at least a jiffy)
// from whatever phase the jiffies counter is in, and the handler may run
// up to timerLate jiffies late. What the backoff ratios of a kernel
// timer's packets may be follows from these (backoffBounds).
func (k kernelClock) timerIntervals(steps []time.Duration) []span {
	out := make([]span, len(steps))
	for i, st := range steps {
		j := k.jiffies(st)
		lo, hi := int64(1<<62), int64(0)
		for phase := int64(0); phase < wheelPhases; phase++ {
			d := wheelFire(phase, j) - phase
			lo, hi = min(lo, d), max(hi, d)
		}
		out[i] = span{k.dur(lo), k.dur(hi + timerLate)}
	}
	return out
}

// timerChain is the range, over timer phases and late handlers, of the
// firing times (after the jiffy of the first arming) of a timer re-armed
// at each firing with the next of steps (a SYN's RTOs).
func (k kernelClock) timerChain(steps []time.Duration) []firingRange {
	out := make([]firingRange, len(steps))
	for i := range out {
		out[i] = firingRange{Kind: "timer", N: i + 1, Lo: 1 << 62}
	}
	for phase := int64(0); phase < wheelPhases; phase++ {
		for _, late := range []int64{0, timerLate} {
			now := phase
			for i, st := range steps {
				now = wheelFire(now, k.jiffies(st)) + late
				at := k.dur(now - phase)
				out[i].Lo, out[i].Hi = min(out[i].Lo, at-k.jiffy()), max(out[i].Hi, at)
			}
		}
	}
	return out
}

// gvisorSocket is the gVisor client's sender (pkg/tcpip/transport/tcp
// snd.go, rack.go) as the model needs it: its smoothed RTT and RTO before
// the fault. gVisor's timers run on the stack's clock (exact in virtual
// mode).
type gvisorSocket struct {
	srtt, rto time.Duration
}

func newGVisorSocket(c Conditions) gvisorSocket {
	g := gvisorSocket{srtt: c.RTT, rto: c.RTO}
	if g.rto <= 0 {
		g.rto = gvisorInitialRTO
	}
	return g
}

// dataSchedule returns when gVisor's timers fire for one segment sent into
// a dead link, after the send: the tail-loss probe (schedulePTO: 2·SRTT +
// 200 ms for a single segment, 1 s without an RTT sample), then the RTO,
// doubling up to 120 s (retransmitTimerExpired). The firing that ends the
// connection is the last: the one that finds the segment sent more than
// maxRetries times, or the user timeout u (counted from the segment's last
// transmission when the first RTO fired) used up.
func (g gvisorSocket) dataSchedule(maxRetries int, u time.Duration) []dataFiring {
	pto := time.Second
	if g.srtt > 0 {
		pto = 2*g.srtt + 200*time.Millisecond
	}
	now := pto
	out := []dataFiring{{Kind: fireTLP, At: int64(now)}}
	xmits := 2 // the original and the probe
	lastXmit := now
	rto := g.rto
	now += rto
	var first time.Duration = -1
	for n := 1; n < 256; n++ {
		f := dataFiring{Kind: fireRTO, N: n, At: int64(now)}
		if first < 0 {
			first = lastXmit
		}
		remaining := gvisorRTOMax
		if u > 0 {
			remaining = u - (now - first)
		}
		if remaining <= 0 {
			f.Ends = true
			return append(out, f)
		}
		rto = min(2*rto, gvisorRTOMax, remaining)
		if xmits > maxRetries {
			f.Ends = true
			return append(out, f)
		}
		out = append(out, f)
		xmits++
		lastXmit = now
		now += rto
	}
	return out
}

// recoveryOdds is, for data sent into an outage of length d, the fraction
// of timer phases (and of send instants within the send's jiffy) in which
// retransmission i (0 = the tail-loss probe) is the first one at or after
// d: the one that gets through.
func (k kernelSocket) recoveryOdds(d time.Duration) map[int]float64 {
	odds := map[int]float64{}
	fracs := []float64{0.125, 0.375, 0.625, 0.875}
	n := 0.0
	for phase := int64(0); phase < wheelPhases; phase++ {
		sched := k.dataSchedule(phase, 0, 1, 15, 0, 64)
		for _, fr := range fracs {
			for i, f := range sched {
				at := time.Duration((float64(f.At) - fr) * float64(k.jiffy()))
				if at >= d {
					odds[i]++
					break
				}
			}
			n++
		}
	}
	for i := range odds {
		odds[i] /= n
	}
	return odds
}

// synSchedule simulates the SYN retransmission timer of a connect() into
// a dead link, the first SYN sent in jiffy start (tcp_connect sets
// retrans_stamp then and arms the timer at TCP_TIMEOUT_INIT, 1 s): the
// timer stays at 1 s for the first linear+1 firings
// (tcp_syn_linear_timeouts), then doubles up to 120 s
// (tcp_retransmit_timer); with TCP_USER_TIMEOUT u each re-armed step is
// clamped to what is left of it (tcp_clamp_rto_to_user_timeout). Every
// firing after the first (retransmits_timed_out needs a retransmission)
// compares the milliseconds since the first SYN with
// tcp_model_timeout(retries, 1 s) — linear timeouts do not change it — or
// with u when set; the firing that reaches it ends connect() with
// ETIMEDOUT instead of resending. early decides the firings the SYN's
// instant within its jiffy leaves undecided (the limit falls within that
// jiffy): true ends them.
func (k kernelClock) synSchedule(start, late int64, retries, linear int, u time.Duration, early bool) []dataFiring {
	limit := synBoundary(retries)
	if u > 0 {
		limit = u
	}
	rto, rtoMax := k.jiffies(synRTO), k.jiffies(kernelRTOMax)
	now := start
	var out []dataFiring
	for n := 1; n < 256; n++ {
		step := rto
		if u > 0 && n > 1 {
			// tcp_clamp_rto_to_user_timeout, from the firing before.
			left := u - k.dur(now-start)
			if left <= 0 {
				step = 1
			} else {
				step = min(step, k.jiffies(left))
			}
		}
		now = wheelFire(now, step) + late
		f := dataFiring{Kind: "SYN", N: n, At: now - start}
		if n > 1 {
			// The SYN went out somewhere in jiffy start: the time since
			// it lies within one jiffy below At.
			hi, lo := k.dur(f.At), k.dur(f.At-1)
			f.Ends = lo >= limit || (early && hi >= limit)
			f.Boundary = !f.Ends && hi >= limit
		}
		out = append(out, f)
		if f.Ends {
			return out
		}
		if n > linear {
			rto = min(2*rto, rtoMax)
		}
	}
	return out
}

// synPrediction is the kernel theory for connect() into a dead link.
type synPrediction struct {
	// Firings are the SYN timer's firings up to the last that may end it
	// (times after the first SYN, over timer phases and late handlers).
	Firings []firingRange
	// End is the range of the firing that ends it; Retransmits the range
	// of SYN retransmissions before it.
	End              firingRange
	MinRetx, MaxRetx int
	// Limit is tcp_model_timeout(retries, 1 s) or the user timeout.
	Limit    time.Duration
	UserTime bool
}

// predictSyn runs synSchedule over every timer phase, handlers on time and
// late, and both readings of an undecided firing.
func (k kernelClock) predictSyn(retries, linear int, u time.Duration) synPrediction {
	p := synPrediction{End: firingRange{Kind: "end", Lo: 1 << 62}, MinRetx: 1 << 30, Limit: synBoundary(retries), UserTime: u > 0}
	if u > 0 {
		p.Limit = u
	}
	for phase := int64(0); phase < wheelPhases; phase++ {
		for _, late := range []int64{0, timerLate} {
			for _, early := range []bool{true, false} {
				sched := k.synSchedule(phase, late, retries, linear, u, early)
				for i, f := range sched {
					for len(p.Firings) <= i {
						p.Firings = append(p.Firings, firingRange{Kind: "SYN", N: len(p.Firings) + 1, Lo: 1 << 62})
					}
					at := k.dur(f.At)
					r := &p.Firings[i]
					r.Lo, r.Hi = min(r.Lo, at-k.jiffy()), max(r.Hi, at)
				}
				last := sched[len(sched)-1]
				at := k.dur(last.At)
				p.End.Lo, p.End.Hi = min(p.End.Lo, at-k.jiffy()), max(p.End.Hi, at)
				p.MinRetx, p.MaxRetx = min(p.MinRetx, len(sched)-1), max(p.MaxRetx, len(sched)-1)
			}
		}
	}
	return p
}

// probeUserTimeout simulates a zero-window sender with TCP_USER_TIMEOUT u
// whose probes are not answered with an open window (tcp_probe_timer,
// tcp_clamp_probe0_to_user_timeout): the persist timer fires base after
// the window closed and stamps icsk_probes_tstamp; it is re-armed at twice
// the previous step, clamped to what is left of u (at least
// TCP_TIMEOUT_MIN, 2 jiffies), and the firing that finds u used up since
// the stamp aborts instead of probing. It returns the range of the abort's
// time after the window closed and of the number of probes before it, over
// timer phases, handlers on time and late.
func (k kernelClock) probeUserTimeout(base, u time.Duration) (lo, hi time.Duration, minProbes, maxProbes int) {
	lo, minProbes = 1<<62, 1<<30
	ju, rtoMax := k.jiffies(u), k.jiffies(kernelRTOMax)
	for phase := int64(0); phase < wheelPhases; phase++ {
		for _, late := range []int64{0, timerLate} {
			step := k.jiffies(base)
			now := wheelFire(phase, step) + late
			stamp, probes := now, 1
			for range 64 {
				step = min(2*step, rtoMax)
				when := min(max(ju-(now-stamp), 2), step)
				now = wheelFire(now, when) + late
				if now-stamp >= ju {
					break
				}
				probes++
			}
			at := k.dur(now - phase)
			lo, hi = min(lo, at-k.jiffy()), max(hi, at)
			minProbes, maxProbes = min(minProbes, probes), max(maxProbes, probes)
		}
	}
	return lo, hi, minProbes, maxProbes
}
