package scenarios

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/unplug-dev/unplug/stack/services"
)

// zeroWindowScenario fills the peer's receive window: the sink never reads.
func zeroWindowScenario() Scenario {
	return Scenario{
		Name:    "zero-window",
		Streams: true,
		Summary: "peer stops reading: the window closes and the client sends zero-window probes with backoff",
		Params: []Param{
			{Name: "watch", Kind: KindDuration, Default: "2s", Min: "500ms", Max: "1h",
				Help: "how long the blocked writer waits once the window is closed"},
			{Name: "outage", Kind: KindDuration, Default: "0s", Max: "1h",
				Help: "drop everything for this long once the window is closed, so the probes die too (0 = no outage)"},
			{Name: "user-timeout", Kind: KindDuration, Default: "0s", Max: "1h",
				Help: "TCP_USER_TIMEOUT on the writer (0 = off); Linux gives up once the window stayed closed this long"},
		},
		Run:     runZeroWindow,
		Expect:  nominal(preciseZeroWindow),
		Precise: preciseZeroWindow,
	}
}

// fillWait is how long a send may block without writing a byte before the
// window counts as closed: shorter than the first window probe (the RTO,
// at least 200 ms after the window closed), so the client's RTO is read
// before the persist timer doubles it.
const fillWait = 150 * time.Millisecond

// windowRTOName is the measurement of the client's RTO as the window
// closed.
const windowRTOName = "client RTO as the window closed"

// fillLimit bounds the bytes written while filling the window.
const fillLimit = 256 << 20

func runZeroWindow(ctx context.Context, env runEnv, p Params, r *recorder) error {
	c, err := env.Dial(ctx, portSink, SockOpts{UserTimeout: p.Duration("user-timeout")})
	if err != nil {
		return fmt.Errorf("connect to the peer's sink service: %w", err)
	}
	defer c.Close()
	if rtt := c.Info().RTT; rtt >= fillWait/2 {
		return fmt.Errorf("zero-window needs a round trip below %s to tell a closed window from a slow one (the handshake measured %s): use a --link-delay below %s", fillWait/2, rtt, fillWait/4)
	}
	chunk := bytes.Repeat([]byte("*"), 64<<10)
	var filled int64
	full, closed := time.Duration(-1), false
	var rto time.Duration
	for filled < fillLimit && !closed {
		start := env.Now()
		if err := c.SetDeadline(start + fillWait); err != nil {
			return err
		}
		n, err := c.Write(chunk)
		filled += int64(n)
		if n > 0 {
			// The last send that moved bytes returns within fillWait of
			// the window closing: before the first probe, so its RTO is
			// the one the persist timer starts from.
			rto = c.Info().RTO
		}
		if n < len(chunk) && full < 0 {
			full = start // the first send that found the buffer full
		}
		switch {
		case err == nil:
			// Even a short count means there was room: write again.
		case isDeadline(err):
			closed = true
		default:
			return outcomeOf(ctx, r, "send", err)
		}
	}
	if !closed {
		return fmt.Errorf("wrote %s to the sink and its window never closed", formatBytes(float64(filled)))
	}
	r.Measure("written before the window closed", float64(filled), "bytes")
	if rto > 0 {
		r.Measure(windowRTOName, rto.Seconds(), "s")
	}
	r.AnchorAt(full, "send buffer full, the peer's window closed")
	if d := p.Duration("outage"); d > 0 {
		if _, err := env.AddFault(fmt.Sprintf("drop for=%s", d)); err != nil {
			return err
		}
	}
	// While the window stays closed every probe's answer can let Linux
	// grow the send buffer, so a send may still take a little; keep the
	// writer blocked until the watch ends.
	watch := p.Duration("watch")
	end := env.Now() + watch
	if err := c.SetDeadline(end); err != nil {
		return err
	}
	var more int64
	for {
		n, err := c.Write(chunk)
		more += int64(n)
		switch {
		case err == nil:
			continue
		case isDeadline(err):
			r.Measure("accepted while the window was closed", float64(more), "bytes")
			r.Outcome(OutcomeSurvived, "the writer stayed blocked for %s; the connection is alive, its window closed", watch)
			return nil
		}
		return outcomeOf(ctx, r, "send", err)
	}
}

func preciseZeroWindow(p Params, c Conditions) Theory {
	watch, u := p.Duration("watch"), p.Duration("user-timeout")
	th := Theory{Outcome: OutcomeSurvived}
	// The run ends watch after the fill loop noticed the closed window
	// (one or two fillWait after the anchor).
	endLo, endHi := watch+fillWait, watch+2*fillWait+100*time.Millisecond
	// The closed window is probed with zero-window probes, or, when the
	// last segment went out beyond the window, by retransmitting it: both
	// on a timer from the RTO (at least 200 ms: tcp_probe0_base), doubling,
	// from when the window closed (the anchor).
	base := max(c.RTO, kernelRTOMin)
	if !c.Kernel && c.WindowRTO > 0 {
		base = max(c.WindowRTO, 200*time.Millisecond)
	}
	tol := c.tolerance()
	var chain []firingRange
	var steps []time.Duration
	if c.Kernel {
		for t, st := time.Duration(0), base; t < endHi+time.Second; st = min(2*st, kernelRTOMax) {
			t += st
			steps = append(steps, st)
		}
		chain = kernelClock{hz: c.hz()}.timerChain(steps)
	} else {
		for _, t := range persistTimes(endHi + time.Second) {
			chain = append(chain, firingRange{Kind: "timer", Lo: t, Hi: t})
		}
	}
	probesLo, probesHi := -1, -1
	if u > 0 {
		var at, lo, hi time.Duration
		var basis string
		if c.Kernel {
			// tcp_probe_timer: the first firing stamps icsk_probes_tstamp;
			// every later one is clamped to what is left of the user
			// timeout (tcp_clamp_probe0_to_user_timeout), and the firing
			// that finds it used up aborts, probes answered or not.
			lo, hi, probesLo, probesHi = kernelClock{hz: c.hz()}.probeUserTimeout(base, u)
			lo, hi = lo-tol, hi+tol
			at = (lo + hi) / 2
			basis = fmt.Sprintf("Linux: the first window probe (the persist timer at the RTO, %s) stamps the start; the timer, doubling, is clamped to what is left of TCP_USER_TIMEOUT (%s), and the firing that finds it used up ends the connection, probes answered or not (tcp_probe_timer); timers in jiffies (HZ %d), rounded up by the timer wheel", fmtDur(base), fmtDur(u), c.hz())
		} else {
			// gVisor: enableZeroWindowProbing starts the user timeout when
			// the zero window reaches it; retransmitTimerExpired clamps the
			// timer to it and times out exactly then.
			start := time.Duration(0)
			if c.HasWindowClosed {
				start = c.WindowClosed + c.LinkDelay
			}
			at, lo, hi = start+u, start+u, start+u
			basis = fmt.Sprintf("gVisor: TCP_USER_TIMEOUT (%s) counts from the zero-window ACK reaching the client (%s after the anchor), the persist timer is clamped to it and the connection times out exactly then (retransmitTimerExpired; virtual clock: exact)", fmtDur(u), fmtSecs(start))
		}
		if at+time.Second <= watch {
			th = Theory{Outcome: "ETIMEDOUT", At: at, AtLo: max(lo, 0), AtHi: hi, AtBasis: basis}
			endLo, endHi = lo, hi
		} else {
			probesLo = -1
		}
	}
	lo, hi := 0, 0
	for _, f := range chain {
		if f.Hi+tol < endLo {
			lo++
		}
		if f.Lo-tol < endHi {
			hi++
		}
	}
	basis := fmt.Sprintf("the persist timer (or the RTO, if data went out beyond the window) starts at the RTO (%s, at least 200 ms) and doubles (RFC 1122 4.2.2.17); the window closed at the anchor and the run ends %s–%s after it", fmtDur(base), fmtSecs(endLo), fmtSecs(endHi))
	if probesLo >= 0 {
		lo, hi = probesLo, probesHi
		basis = fmt.Sprintf("the persist timer starts at the RTO (%s) and doubles, each step clamped to what is left of TCP_USER_TIMEOUT; one probe per firing before the one that ends it", fmtDur(base))
	}
	want, capped := lo, false
	if !c.Kernel {
		want, lo, hi, capped, basis = gvisorWindowProbes(c, endLo, endHi)
	}
	th.Checks = append(th.Checks, countCheck("window probes", "in", "zero-window-probe,retransmit", want, lo, hi, basis))
	if lo >= 3 {
		th.Checks = append(th.Checks, windowBackoffCheck(c, steps, probesLo >= 0 || capped, lo, hi))
	}
	return th
}

// windowBackoffCheck is zero-window's probe backoff row. The first
// probe's interval runs from the last data segment, not from a timer
// firing, so its ratio says nothing of the doubling and is left out; from
// the third probe on, gVisor's persist timer doubles exactly on the
// virtual clock, and the kernel's ratios are bounded by its timer wheel's
// rounding of each step and the run's tolerance (kernelBackoffCheck). Steps
// clamped to a user timeout, or capped, keep the loose 1.6–2.5.
func windowBackoffCheck(c Conditions, steps []time.Duration, clamped bool, nLo, nHi int) Check {
	const name, kinds = "probe backoff ratio", "zero-window-probe,retransmit"
	why := "each probe the peer answers with a closed window doubles the interval"
	if clamped {
		return backoffCheck(name, "in", kinds, 0, 2, looseRatioLo, looseRatioHi, why)
	}
	why += "; from the third probe on (the first interval runs from the last data segment)"
	if c.Virtual {
		return backoffCheck(name, "in", kinds, 1, 2, 2, 2, why+"; virtual clock: exact")
	}
	return kernelBackoffCheck(name, kinds, 1, steps, c, nLo, nHi, why)
}

// gvisorWindowProbes is the virtual clock's exact count of the gVisor
// client's window probes: its persist timer (enableZeroWindowProbing,
// retransmitTimerExpired) is armed at its RTO when the zero-window ACK
// reaches it — one link delay after the fault layer passed that ACK — and
// doubles up to 120 s; each probe reaches the fault layer one link delay
// after it fires. The RTO is the one read when the last send that moved
// bytes returned, before the timer first fired (fillWait is shorter than
// the 200 ms minimum). The
// probes the fault layer sees before the outcome are counted; one due at
// the outcome's very instant may be seen on either side of it (both
// timers fire in the same clock step), so it is the one case with a
// range. Without a closed window or an outcome it falls back to the
// nominal run end (endLo–endHi after the anchor). capped says the 120 s
// cap shortened a step before a probe counted (the doubling stopped).
func gvisorWindowProbes(c Conditions, endLo, endHi time.Duration) (want, lo, hi int, capped bool, basis string) {
	rto, read := c.RTO, "read before the fault"
	if c.WindowRTO > 0 {
		rto, read = c.WindowRTO, "read as the window closed, before the timer first fired"
	}
	rto = max(rto, 200*time.Millisecond)
	start, from := time.Duration(0), "the anchor (the window close was not seen)"
	if c.HasWindowClosed {
		start, from = c.WindowClosed+c.LinkDelay, fmt.Sprintf("the zero-window ACK reaching the client %s after the anchor (the fault layer passed it at %s, plus the %s link delay)", fmtSecs(c.WindowClosed+c.LinkDelay), fmtSecs(c.WindowClosed), fmtDur(c.LinkDelay))
	}
	end, ends := endHi, fmt.Sprintf("the run ends %s–%s after the anchor", fmtSecs(endLo), fmtSecs(endHi))
	if c.OutcomeAt > 0 {
		endLo, end, ends = c.OutcomeAt, c.OutcomeAt, fmt.Sprintf("the outcome came %s after the anchor", fmtSecs(c.OutcomeAt))
	}
	var at []string
	fire, step, stepCapped := start, rto, false
	for {
		fire += step
		seen := fire + c.LinkDelay
		if seen > end {
			break
		}
		if seen < endLo {
			lo++
		}
		hi++
		at = append(at, strings.TrimSuffix(fmtSecs(seen), " s"))
		capped = capped || stepCapped
		step, stepCapped = min(2*step, gvisorRTOMax), 2*step > gvisorRTOMax
	}
	if len(at) == 0 {
		at = append(at, "none")
	}
	basis = fmt.Sprintf("gVisor's persist timer: armed at its RTO (%s, %s) from %s, doubling; probes seen at %s s after the anchor, counted until %s (virtual clock: exact; a probe at that very instant may fall on either side)", fmtDur(rto), read, from, strings.Join(at, ", "), ends)
	return lo, lo, hi, capped, basis
}

// lossScenario uploads over a lossy link: the client is the sender, so on
// the real clock Linux's loss recovery (SACK, RACK, tail-loss probes, RTO)
// is what the report measures; the peer only acknowledges.
func lossScenario() Scenario {
	return Scenario{
		Name:    "loss",
		Streams: true,
		Summary: "random loss both ways while the client uploads: the client's TCP recovers every lost segment; retransmissions, goodput, completion time",
		Params: []Param{
			{Name: "loss", Kind: KindPercent, Default: "5%", Min: "0%", Max: "50%",
				Help: "probability that a packet is lost, in each direction (decided per segment from --seed: the same seed loses the same segments)"},
			{Name: "requests", Kind: KindInt, Default: "10", Min: "1", Max: "1000",
				Help: "how many uploads, one connection each, one after the other"},
			{Name: "size", Kind: KindSize, Default: "256KiB", Min: "1", Max: "1GiB",
				Help: "bytes per upload (to the peer's discard service)"},
		},
		Run:    runLoss,
		Expect: expectLoss,
	}
}

// portDiscard is the peer's discard service: it reads and counts.
const portDiscard = services.DefaultDiscardPort

// lossUploadLimit bounds one upload; beyond it the run fails.
const lossUploadLimit = 10 * time.Minute

// senderName says whose TCP sends (and so recovers) in the loss scenario.
func senderName(kernel bool) string {
	if kernel {
		return "the Linux kernel's TCP (the client uploads; the peer, gVisor, only acknowledges)"
	}
	return "gVisor's TCP on the virtual client (RACK on; the peer only acknowledges)"
}

func runLoss(ctx context.Context, env runEnv, p Params, r *recorder) error {
	pct, reqs, size := p.Percent("loss"), p.Int("requests"), p.Size("size")
	env.Note(EventNote, "sender: %s", senderName(env.Kernel()))
	if pct > 0 {
		if _, err := env.AddFault("loss " + strconv.FormatFloat(pct, 'g', -1, 64) + "%"); err != nil {
			return err
		}
	}
	r.Anchor("uploads start")
	// Writes of whole segments keep Linux's segment boundaries at the same
	// stream offsets in every run (a write ending mid-segment can leave a
	// short segment whose position depends on timing), so the same seed
	// meets the same segments.
	chunk := services.Pattern(0, lossChunkSegments*lossMSS)
	start := env.Now()
	var total int64
	var lat []time.Duration
	for i := 1; i <= reqs; i++ {
		t0 := env.Now()
		before := env.Peer().Received(portDiscard)
		c, err := env.Dial(ctx, portDiscard, SockOpts{})
		if err != nil {
			return outcomeOf(ctx, r, "connect", err)
		}
		for sent := int64(0); sent < size; {
			n, err := c.Write(chunk[:min(int64(len(chunk)), size-sent)])
			sent += int64(n)
			if err != nil {
				c.Close()
				return outcomeOf(ctx, r, "send", err)
			}
		}
		// The upload is done when the peer has read every byte.
		for env.Peer().Received(portDiscard)-before < size {
			if env.Now()-t0 > lossUploadLimit {
				c.Close()
				return fmt.Errorf("upload %d: the peer got %d of %d bytes within %s", i,
					env.Peer().Received(portDiscard)-before, size, lossUploadLimit)
			}
			if err := env.Sleep(ctx, time.Millisecond); err != nil {
				c.Close()
				return err
			}
		}
		got := env.Peer().Received(portDiscard) - before
		c.Close()
		total += got
		lat = append(lat, env.Now()-t0)
	}
	elapsed := env.Now() - start
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	r.Measure("bytes received", float64(total), "bytes")
	r.Measure("completion time", elapsed.Seconds(), "s")
	if elapsed > 0 {
		r.Measure("goodput", float64(total)/elapsed.Seconds(), "B/s")
	}
	r.Measure("latency p50", percentile(lat, 50).Seconds(), "s")
	r.Measure("latency p99", percentile(lat, 99).Seconds(), "s")
	r.Measure("latency max", lat[len(lat)-1].Seconds(), "s")
	r.Outcome(OutcomeRecovered, "all %d uploads complete (%s) despite %g%% loss each way; sender: %s",
		reqs, formatBytes(float64(total)), pct, senderName(env.Kernel()))
	return nil
}

// percentile returns the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, pct int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*pct + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

// lossChunkSegments is how many full segments one upload write carries.
const lossChunkSegments = 45

// lossMSS is the client's segment size on the 1500-byte link: 1460 less
// 12 bytes of TCP timestamps (Linux and gVisor alike).
const lossMSS = 1448

// lossZ is the two-sided 99.9 % normal quantile: binomial rows accept
// counts within lossZ standard deviations of their mean.
const lossZ = 3.29

// lossRTOCost bounds what one retransmission can cost the transfer: the
// RTO that may have preceded it (the 200 ms minimum plus timer rounding,
// doubled per earlier retransmission of the same segment; a SYN's starts at
// 1 s).
func lossRTOCost(x Retransmission) time.Duration {
	base := kernelRTOMin + 10*time.Millisecond
	if strings.Contains(x.Flags, "S") {
		base = time.Second
	}
	return base << min(max(x.N-1, 0), 10)
}

// lossCleanTime is what one upload may take without any loss: handshake,
// slow start and the copy through the TUN, with room for a loaded machine.
const lossCleanTime = 100 * time.Millisecond

func expectLoss(p Params, kernel bool) Theory {
	rtoNote := "gVisor's minimum is 200 ms"
	if kernel {
		rtoNote = "the kernel's over the TUN is " + fmtDur(nominalConditions(true).RTO)
	}
	pct, reqs, size := p.Percent("loss"), p.Int("requests"), p.Size("size")
	q := pct / 100
	total := float64(int64(reqs) * size)
	segs := float64(reqs) * math.Ceil(float64(size)/lossMSS)
	// Each segment is sent until one copy passes: transmissions are
	// geometric, so retransmissions of data have mean n·q/(1−q) and
	// variance n·q/(1−q)².
	mean := segs * q / (1 - q)
	sd := math.Sqrt(segs*q) / (1 - q)
	lo, hi := math.Max(math.Floor(mean-lossZ*sd), 0), math.Ceil(mean+lossZ*sd)
	// Spurious retransmissions: a tail-loss probe or RTO after a lost ACK
	// resends a segment that had arrived; allow one per lost peer packet.
	spurious := float64(reqs)*2 + math.Ceil(lossMeanOut(segs, q))
	who := senderName(kernel)
	retransmitCheck := reportCheck("client data retransmissions", "count", mean, lo, hi+spurious,
		fmt.Sprintf("sender: %s. Each of ≈%.0f segments is resent until a copy passes: n·p/(1−p) ± %.2f σ, plus up to %.0f spurious (a probe or RTO after a lost ACK)", who, segs, lossZ, spurious),
		func(r *Report) (float64, bool) { return float64(lossDataRetransmits(r)), true })
	if !kernel {
		// gVisor's RACK also resends many segments that had arrived (it
		// marks them lost about one RTT after sending): no upper bound.
		retransmitCheck.Max = inf
		retransmitCheck.Basis = fmt.Sprintf("sender: %s. Each of ≈%.0f segments is resent until a copy passes: at least n·p/(1−p) − %.2f σ; gVisor's RACK also resends segments that had arrived, so there is no upper bound", who, segs, lossZ)
	}
	return Theory{Outcome: OutcomeRecovered, Checks: []Check{
		measured("bytes received", "bytes", total, total, total, false,
			"TCP delivers every byte, whatever the loss: the peer's discard service counts them"),
		reportCheck("client packets lost (z-score)", "ratio", 0, -lossZ, lossZ,
			fmt.Sprintf("the fault layer drops each client packet with p = %g%%: the count is binomial, within %.2f σ of N·p at 99.9 %%", pct, lossZ),
			func(r *Report) (float64, bool) { return binomialZ(r.Packets.DroppedIn, r.Packets.In, q) }),
		reportCheck("peer packets lost (z-score)", "ratio", 0, -lossZ, lossZ,
			fmt.Sprintf("the same for the peer's packets (its ACKs), p = %g%%", pct),
			func(r *Report) (float64, bool) { return binomialZ(r.Packets.DroppedOut, r.Packets.Out, q) }),
		retransmitCheck,
		reportCheck("lost client segments never resent", "count", 0, 0, 0,
			"every data segment or SYN the fault layer dropped is sent again (else its bytes could not have arrived)",
			func(r *Report) (float64, bool) { return float64(lostNotResent(r)), true }),
		{Name: "completion time over its RTO bound", Unit: "ratio", Want: 0, Min: 0, Max: 1, Timing: true,
			Basis: fmt.Sprintf("the uploads take at most %s each without loss, plus one RTO bound per retransmission of either side: %s (the 200 ms minimum plus timer rounding; %s), doubling per retry of a segment; %s for a SYN", lossCleanTime, fmtDur(lossRTOCost(Retransmission{N: 1})), rtoNote, fmtDur(lossRTOCost(Retransmission{N: 1, Flags: "S"}))),
			measure: func(r *Report) (float64, bool) {
				m, ok := r.Measurement("completion time")
				if !ok {
					return 0, false
				}
				bound := time.Duration(reqs) * lossCleanTime
				for _, x := range r.Retransmissions {
					if x.Kind == "retransmit" {
						bound += lossRTOCost(x)
					}
				}
				return m.Value / bound.Seconds(), true
			}},
	}}
}

// lossMeanOut estimates how many peer packets are lost: about one ACK per
// two segments (delayed ACKs), each lost with probability q.
func lossMeanOut(segs, q float64) float64 { return segs / 2 * q }

// binomialZ is how many standard deviations k lost of n at probability q
// lie from the mean; false when there is nothing to measure.
func binomialZ(k, n int, q float64) (float64, bool) {
	if n == 0 {
		return 0, false
	}
	v := float64(n) * q * (1 - q)
	if v == 0 {
		if float64(k) == float64(n)*q {
			return 0, true
		}
		return math.Inf(1), true
	}
	return (float64(k) - float64(n)*q) / math.Sqrt(v), true
}

// lossDataRetransmits counts the client's retransmissions of segments
// carrying data.
func lossDataRetransmits(r *Report) int {
	n := 0
	for _, x := range r.Retransmissions {
		if x.Dir == "in" && x.Kind == "retransmit" && x.Len > 0 {
			n++
		}
	}
	return n
}

// lostNotResent counts client segments carrying data or a SYN that the
// fault layer dropped before any copy of them had passed, and that no later
// packet of the same connection carried again. (A spurious retransmission
// that is lost needs no resending: its bytes had already arrived. A bare
// FIN is left out: the run may end before a lost one is resent.)
func lostNotResent(r *Report) int {
	type key struct {
		conn int
		seq  uint32
	}
	type span struct {
		seq uint32
		n   int
	}
	passed := map[int][]span{}
	lost := map[key]bool{}
	covered := func(conn int, seq uint32) bool {
		for _, sp := range passed[conn] {
			if seqCovers(sp.seq, sp.n, seq) {
				return true
			}
		}
		return false
	}
	for _, ev := range r.Timeline {
		pk := ev.Packet
		if pk == nil || pk.Dir != "in" || pk.Proto != "tcp" || strings.Contains(pk.Flags, "R") {
			continue
		}
		if pk.Len == 0 && !strings.Contains(pk.Flags, "S") {
			continue
		}
		if pk.Verdict == "drop" {
			if !covered(pk.Conn, pk.Seq) {
				lost[key{pk.Conn, pk.Seq}] = true
			}
			continue
		}
		passed[pk.Conn] = append(passed[pk.Conn], span{pk.Seq, pk.Len})
		for l := range lost {
			if l.conn == pk.Conn && seqCovers(pk.Seq, pk.Len, l.seq) {
				delete(lost, l)
			}
		}
	}
	return len(lost)
}

// seqCovers reports whether a segment starting at seq with n bytes
// carries sequence number at (SYN and FIN: n = 0 covers seq itself).
func seqCovers(seq uint32, n int, at uint32) bool {
	return int32(at-seq) >= 0 && int32(at-seq) < int32(max(n, 1))
}
