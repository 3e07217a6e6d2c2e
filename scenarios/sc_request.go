package scenarios

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// timeoutScenario is the seed's first experiment: a request sent into a
// link that just died.
func timeoutScenario() Scenario {
	return Scenario{
		Name:    "timeout",
		Summary: "request sent into a dead link: backoff until recv() fails with ETIMEDOUT",
		Params: []Param{
			{Name: "retries2", Kind: KindInt, Default: "4", Min: "1", Max: "15",
				Help: "net.ipv4.tcp_retries2 in the private namespace: how long the kernel retransmits before ETIMEDOUT (Linux default 15 ≈ 15.6 min; 4 ≈ 6.7 s; 3 sits on a boundary: 3.4 s or 6.7 s depending on the RTT)"},
			{Name: "user-timeout", Kind: KindDuration, Default: "0s", Max: "1h",
				Help: "TCP_USER_TIMEOUT on the client socket (0 = off); when set it decides instead of retries2 (ETIMEDOUT ≈ U + 0.41 s)"},
		},
		Run:     runTimeout,
		Expect:  nominal(preciseTimeout),
		Precise: preciseTimeout,
	}
}

func runTimeout(ctx context.Context, env runEnv, p Params, r *recorder) error {
	if err := env.SetSysctl("net.ipv4.tcp_retries2", strconv.Itoa(p.Int("retries2"))); err != nil {
		return err
	}
	c, err := env.Dial(ctx, portHTTP, SockOpts{UserTimeout: p.Duration("user-timeout")})
	if err != nil {
		return fmt.Errorf("connect to the peer's http service: %w", err)
	}
	defer c.Close()
	if _, err := env.AddFault("drop"); err != nil {
		return err
	}
	r.Anchor("request sent into the dead link")
	if _, err := c.Write(request404); err != nil {
		return outcomeOf(ctx, r, "send", err)
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return outcomeOf(ctx, r, "recv", err)
	}
	return fmt.Errorf("recv returned %d bytes although every packet is dropped", n)
}

func preciseTimeout(p Params, c Conditions) Theory {
	n2, u := p.Int("retries2"), p.Duration("user-timeout")
	plan := planData(c, 1, n2, u)
	tol := c.tolerance()
	lo, hi := plan.endRange()
	var basis string
	switch {
	case c.Kernel && u > 0:
		basis = fmt.Sprintf("TCP_USER_TIMEOUT %s counts from the first RTO retransmission; the RTO is clamped to what is left of it; FACTS: 1 s → 1.42 s", u)
	case c.Kernel:
		basis = fmt.Sprintf("tcp_retries2=%d: the kernel gives up at the first RTO firing %s or more (tcp_model_timeout, 200 ms base) after the first RTO retransmission", n2, fmtSecs(retries2Boundary(n2)))
	case u > 0:
		basis = fmt.Sprintf("gVisor gives up when %s has passed since the segment's last transmission before the first RTO (TCPUserTimeoutOption)", u)
	default:
		basis = fmt.Sprintf("gVisor gives up at the RTO firing that finds the segment sent more than %d times (TCPMaxRetriesOption)", n2)
	}
	th := Theory{Outcome: "ETIMEDOUT", At: (lo + hi) / 2, AtLo: max(lo-tol, 0), AtHi: hi + tol,
		AtBasis: basis + "; " + c.describeClient()}
	nlo, nhi := 1<<30, 0
	for _, e := range plan.Ends {
		nlo, nhi = min(nlo, e.Firing), max(nhi, e.Firing)
	}
	th.Checks = append(th.Checks,
		endCheck(plan, "ETIMEDOUT", c),
		countCheck("retransmissions", "in", "retransmit", plan.likely().Firing, nlo, nhi,
			"the tail-loss probe, then one retransmission per RTO firing until the one that ends it"),
		scheduleCheck("retransmission times", plan.Retrans, c.LinkDelay, tol,
			"TLP, then RTO doubling (RFC 6298 5.5); kernel timers in jiffies, rounded up by the timer wheel; times after the send"),
	)
	return th
}

// briefOutageScenario is the seed's last experiment: the link comes back
// while the request is being retransmitted.
func briefOutageScenario() Scenario {
	return Scenario{
		Name:    "brief-outage",
		Summary: "link down for a while during a request: the reply comes with the first retransmission after it returns",
		Params: []Param{
			{Name: "outage", Kind: KindDuration, Default: "3s", Min: "100ms", Max: "10m",
				Help: "how long the link is down, from just before the request is sent"},
		},
		Run:     runBriefOutage,
		Expect:  nominal(preciseBriefOutage),
		Precise: preciseBriefOutage,
	}
}

func runBriefOutage(ctx context.Context, env runEnv, p Params, r *recorder) error {
	d := p.Duration("outage")
	c, err := env.Dial(ctx, portHTTP, SockOpts{})
	if err != nil {
		return fmt.Errorf("connect to the peer's http service: %w", err)
	}
	defer c.Close()
	if _, err := env.AddFault(fmt.Sprintf("drop for=%s", d)); err != nil {
		return err
	}
	r.Anchor("request sent; the outage starts")
	sent := env.Now()
	if _, err := c.Write(request404); err != nil {
		return outcomeOf(ctx, r, "send", err)
	}
	resp, first, err := readAll(env, c)
	if err != nil {
		return outcomeOf(ctx, r, "recv", err)
	}
	if first < 0 || !bytes.HasPrefix(resp, []byte("HTTP/1.0 404 ")) {
		return fmt.Errorf("unexpected response from the peer: %.40q", resp)
	}
	recovery := first - sent
	r.Measure("outage", d.Seconds(), "s")
	r.Measure("recovery", recovery.Seconds(), "s")
	r.Measure("recovery lag", (recovery - d).Seconds(), "s")
	r.OutcomeAt(first, OutcomeRecovered, "the reply arrived %s after the request, %s after the link came back",
		seconds(recovery), seconds(recovery-d))
	return nil
}

func preciseBriefOutage(p Params, c Conditions) Theory {
	d := p.Duration("outage")
	// The retransmissions go out on the schedule of a send into a dead
	// link that never times out (Linux's default tcp_retries2 15, gVisor's
	// 15 retries); the first one the fault layer sees after the outage
	// passes, and its reply arrives one RTT later.
	plan := planData(c, 1, 15, 0)
	seen := c.LinkDelay // the fault layer sees a packet this long after it is sent
	rtt := c.RTT
	if c.Virtual {
		rtt = 2 * c.LinkDelay
	}
	tol := c.tolerance()
	var first, last int = -1, -1 // the retransmissions that may be the one that passes
	for i, f := range plan.Retrans {
		if f.Hi+seen >= d && first < 0 {
			first = i
		}
		if f.Lo+seen >= d {
			last = i
			break
		}
	}
	if first < 0 || last < 0 {
		first, last = len(plan.Retrans)-1, len(plan.Retrans)-1
	}
	lo, hi := plan.Retrans[first].Lo+rtt, plan.Retrans[last].Hi+rtt
	var names []string
	var odds map[int]float64
	if c.Kernel && first != last {
		odds = newKernelSocket(c).recoveryOdds(d - seen)
	}
	for i := first; i <= last; i++ {
		name := firingName(plan.Retrans[i])
		switch {
		case odds == nil:
		case odds[i] < 0.005:
			name += " (only with a late timer)"
		default:
			name += fmt.Sprintf(" (%.0f%%)", 100*odds[i])
		}
		names = append(names, name)
	}
	basis := "the first retransmission after the link is back gets through, its reply one RTT later"
	// FACTS measured it over the TUN (RTO 200 ms + one jiffy): quoted
	// only where it applies.
	if facts := map[time.Duration]string{1500 * time.Millisecond: "1.66 s", 3 * time.Second: "3.28 s"}[d]; facts != "" && c.RTO == kernelRTO(c.hz(), tunRTT) {
		basis += fmt.Sprintf("; FACTS (measured with this RTO): %s → %s", shortSeconds(d), facts)
	}
	if !c.Kernel {
		basis = "gVisor's first retransmission after the link is back gets through, its reply one RTT later"
	}
	if first != last {
		basis += fmt.Sprintf("; the outage ends within %s's timer rounding, so %s", firingName(plan.Retrans[first]), strings.Join(names, " or "))
	}
	th := Theory{Outcome: OutcomeRecovered, At: (lo + hi) / 2, AtLo: max(lo-tol, 0), AtHi: hi + tol,
		AtBasis: basis + "; " + c.describeClient()}
	passing := Check{Name: "retransmission that gets through", Unit: "count", Want: float64(last + 1), Min: float64(first + 1), Max: float64(last + 1),
		TheoryText: strings.Join(names, " or ") + fmt.Sprintf(" (retransmission %d", first+1),
		Basis:      "retransmissions during the outage are lost; the first after it passes",
		measure: func(r *Report) (float64, bool) {
			for i, x := range clientSeries(r, "retransmit") {
				if x.Verdict == "pass" {
					return float64(i + 1), true
				}
			}
			return 0, false
		},
		explain: func(r *Report, got float64) string {
			return fmt.Sprintf("retransmission %.0f", got)
		}}
	if first != last {
		passing.TheoryText += fmt.Sprintf(" or %d)", last+1)
	} else {
		passing.TheoryText += ")"
	}
	th.Checks = append(th.Checks,
		passing,
		countCheck("retransmissions", "in", "retransmit", last+1, first+1, last+1,
			"retransmissions during the outage, plus the one that gets through"),
		reportCheck("recovered by a retransmission after the outage", "", 1, 1, 1,
			"the first client retransmission that passes comes after the outage", recoveredAfterOutage),
		scheduleCheck("retransmission times", plan.Retrans[:last+1], seen, tol,
			"TLP, then RTO doubling (RFC 6298 5.5); times after the send"),
		Check{Name: "recovery lag", Unit: "s", Want: ((lo+hi)/2 - d).Seconds(), Min: max(lo-tol-d, 0).Seconds(),
			Max: (hi + tol - d).Seconds(), Timing: true,
			Basis: "recovery lags the outage by less than one RTO: the wait for the next firing, plus an RTT",
			measure: func(r *Report) (float64, bool) {
				m, ok := r.Measurement("recovery lag")
				return m.Value, ok
			}},
	)
	return th
}

// firstOutage returns the first drop rule's window.
func firstOutage(r *Report) (FaultWindow, bool) {
	for _, w := range r.Faults {
		if w.Outage {
			return w, true
		}
	}
	return FaultWindow{}, false
}

// recoveredAfterOutage is 1 when the first client retransmission that
// passed the fault layer came after the first outage ended.
func recoveredAfterOutage(r *Report) (float64, bool) {
	w, ok := firstOutage(r)
	if !ok {
		return 0, false
	}
	for _, x := range r.Retransmissions {
		if x.Dir == "in" && x.Kind == "retransmit" && x.Verdict == "pass" {
			return boolValue(x.T >= w.End), true
		}
	}
	return 0, true
}

// sendbufFullScenario is the seed's second experiment: a writer that keeps
// writing while the link is down.
func sendbufFullScenario() Scenario {
	return Scenario{
		Name:    "sendbuf-full",
		Summary: "writer during an outage: the send buffer fills, send blocks, returns a short count, then ETIMEDOUT, then EPIPE",
		Kernel:  true,
		Params: []Param{
			{Name: "user-timeout", Kind: KindDuration, Default: "3s", Min: "100ms", Max: "10m",
				Help: "TCP_USER_TIMEOUT on the writer: how long unacknowledged data may wait, so how long the blocked send lasts"},
			{Name: "chunk", Kind: KindSize, Default: "16KiB", Min: "1", Max: "1MiB",
				Help: "bytes per send"},
			{Name: "limit", Kind: KindSize, Default: "64MiB", Min: "1MiB", Max: "1GiB",
				Help: "stop with an error if the send buffer takes more than this"},
		},
		Run:     runSendbufFull,
		Expect:  nominal(preciseSendbufFull),
		Precise: preciseSendbufFull,
	}
}

// blockedAfter is how long a send must take to count as blocked.
const blockedAfter = 250 * time.Millisecond

func runSendbufFull(ctx context.Context, env runEnv, p Params, r *recorder) error {
	chunk := bytes.Repeat([]byte("*"), int(p.Size("chunk")))
	c, err := env.Dial(ctx, portSink, SockOpts{UserTimeout: p.Duration("user-timeout")})
	if err != nil {
		return fmt.Errorf("connect to the peer's sink service: %w", err)
	}
	defer c.Close()
	if _, err := env.AddFault("drop"); err != nil {
		return err
	}
	r.Anchor("outage starts; the client keeps writing")
	var accepted, total int64
	blocked := false
	var firstEPIPE time.Duration = -1
	for epipes := 0; epipes < 2; {
		if total > p.Size("limit") {
			return fmt.Errorf("wrote %s into a dead link without send blocking (raise --limit?)", formatBytes(float64(total)))
		}
		start := env.Now()
		n, err := c.Write(chunk)
		took := env.Now() - start
		total += int64(n)
		if !blocked {
			if err == nil && n == len(chunk) && took < blockedAfter {
				accepted += int64(n)
				continue
			}
			blocked = true
			r.Measure("accepted at once", float64(accepted), "bytes")
			r.Measure("blocked send", took.Seconds(), "s")
			r.Measure("blocked send ended", (env.Now() - r.anchorTime()).Seconds(), "s")
			r.Measure("short count", float64(n), "bytes")
		}
		if err == nil {
			continue
		}
		name := ErrnoName(err)
		if ctx.Err() != nil || name == "" || isDeadline(err) {
			return outcomeOf(ctx, r, "send", err)
		}
		if name == "EPIPE" {
			if firstEPIPE < 0 {
				firstEPIPE = env.Now()
			}
			epipes++
		}
	}
	buf := make([]byte, 512)
	_, err = c.Read(buf)
	r.Measure("recv end of file", boolValue(errors.Is(err, io.EOF)), "")
	r.OutcomeAt(firstEPIPE, "EPIPE", "send got EPIPE %s after the outage started, and every send after it",
		seconds(firstEPIPE-r.anchorTime()))
	return nil
}

// sendbufSlack bounds how far the queued bytes overshoot SO_SNDBUF before
// a send blocks: the kernel checks sk_wmem_queued < sk_sndbuf only when it
// starts a new skb (tcp_sendmsg_locked), so the last skb can take up to a
// few MSS more (measured on Linux 6.18: up to 2.3 MSS).
const sendbufSlackMSS = 4

func preciseSendbufFull(p Params, c Conditions) Theory {
	u, chunk := p.Duration("user-timeout"), p.Size("chunk")
	// The writer's first chunk puts a window's worth of segments in
	// flight: the TLP comes after 2·RTT + 2 jiffies, then the RTOs, and
	// the firing the user timeout expires at ends the blocked send.
	plan := planData(c, 10, 15, u)
	tol := c.tolerance()
	lo, hi := plan.endRange()
	sndbuf, mss := int64(c.SndBuf), int64(c.MSS)
	if sndbuf == 0 { // not measured: Linux 6.18's autotuned value on a 1500-byte MTU
		sndbuf, mss = 69120, 1448
	}
	if mss == 0 {
		mss = 1448
	}
	takenLo, takenHi := sndbuf, sndbuf+sendbufSlackMSS*mss
	accLo, accHi := takenLo/chunk*chunk, takenHi/chunk*chunk
	sndSrc := "nominal"
	if c.SndBuf > 0 {
		sndSrc = "read before the outage"
	}
	return Theory{
		Outcome: "EPIPE", At: (lo + hi) / 2, AtLo: max(lo-tol, 0), AtHi: hi + tol,
		AtBasis: fmt.Sprintf("the blocked send fails at the RTO firing where TCP_USER_TIMEOUT (%s) has passed since the first RTO retransmission (%s); the next send gets EPIPE at once; %s",
			u, plan.describeEnds(), c.describeClient()),
		Checks: []Check{
			measured("accepted at once", "bytes", float64(accLo), float64(accLo), float64(accHi), false,
				fmt.Sprintf("whole %s chunks while the queue is below SO_SNDBUF %d (%s; set at the handshake by tcp_sndbuf_expand from the MSS and the initial window, and not grown without ACKs); FACTS: 64 KiB on Linux 6.18", formatBytes(float64(chunk)), sndbuf, sndSrc)),
			reportCheck("taken before send blocked", "bytes", float64(takenLo), float64(takenLo), float64(takenHi),
				fmt.Sprintf("accepted at once plus the blocked send's short count: SO_SNDBUF, overshot by at most %d MSS (%d): the limit is checked only when a new skb starts", sendbufSlackMSS, mss),
				func(r *Report) (float64, bool) {
					a, ok1 := r.Measurement("accepted at once")
					s, ok2 := r.Measurement("short count")
					return a.Value + s.Value, ok1 && ok2
				}),
			{Name: "blocked send ended", Unit: "s", Want: ((lo + hi) / 2).Seconds(), Min: max(lo-tol, 0).Seconds(), Max: (hi + tol).Seconds(), Timing: true,
				Basis: "the send that finds the buffer full blocks until the user timeout kills the connection (time after the anchor)",
				measure: func(r *Report) (float64, bool) {
					m, ok := r.Measurement("blocked send ended")
					return m.Value, ok
				}},
			reportCheck("ETIMEDOUT, then EPIPE", "", 1, 1, 1,
				"FACTS: the send after the blocked one fails with ETIMEDOUT, every later send gets EPIPE", timedOutThenEPIPE),
			measured("recv end of file", "", 1, 1, 1, false, "FACTS: after the connection died, recv returns end-of-file"),
		},
	}
}

// timedOutThenEPIPE is 1 when the application got ETIMEDOUT and later
// EPIPE.
func timedOutThenEPIPE(r *Report) (float64, bool) {
	seen := false
	for _, e := range r.AppErrors {
		switch e.Errno {
		case "ETIMEDOUT":
			seen = true
		case "EPIPE":
			if seen {
				return 1, true
			}
		}
	}
	return 0, true
}
