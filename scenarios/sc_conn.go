package scenarios

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// idleOutageScenario is the seed's first conclusion: without traffic, TCP
// does not notice an outage at all.
func idleOutageScenario() Scenario {
	return Scenario{
		Name:    "idle-outage",
		Summary: "idle connection during an outage: not a packet, no error, it survives",
		Params: []Param{
			{Name: "outage", Kind: KindDuration, Default: "3s", Min: "100ms", Max: "1h",
				Help: "how long the link is down while the connection is idle"},
		},
		Run:    runIdleOutage,
		Expect: expectIdleOutage,
	}
}

// ping is what scenarios send to the echo service.
var ping = []byte("ping\n")

func runIdleOutage(ctx context.Context, env runEnv, p Params, r *recorder) error {
	d := p.Duration("outage")
	c, err := env.Dial(ctx, portEcho, SockOpts{})
	if err != nil {
		return fmt.Errorf("connect to the peer's echo service: %w", err)
	}
	defer c.Close()
	if _, err := env.AddFault(fmt.Sprintf("drop for=%s", d)); err != nil {
		return err
	}
	r.Anchor("outage starts on the idle connection")
	if err := env.Sleep(ctx, d+settle); err != nil {
		return err
	}
	info := c.Info()
	r.Note("client state after the outage: %s", info.State)
	r.Measure("established after the outage", boolValue(info.State == "ESTABLISHED"), "")
	if err := echo(ctx, env, c, r); err != nil {
		return err
	}
	if r.HasOutcome() {
		return nil
	}
	r.Outcome(OutcomeSurvived, "the connection is %s after the outage and echoes a request", info.State)
	return nil
}

// echo sends ping and reads it back; a socket error becomes the outcome.
func echo(ctx context.Context, env runEnv, c envConn, r *recorder) error {
	if _, err := c.Write(ping); err != nil {
		return outcomeOf(ctx, r, "send", err)
	}
	got := make([]byte, 0, len(ping))
	buf := make([]byte, 64)
	for len(got) < len(ping) {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return outcomeOf(ctx, r, "recv", err)
		}
	}
	if string(got) != string(ping) {
		return fmt.Errorf("the echo service answered %q to %q", got, ping)
	}
	return nil
}

func expectIdleOutage(p Params, kernel bool) Theory {
	return Theory{Outcome: OutcomeSurvived, Checks: []Check{
		reportCheck("packets during the outage", "count", 0, 0, 0,
			"an idle connection without keepalive sends nothing, so nothing notices the outage", packetsDuringOutage),
		measured("established after the outage", "", 1, 1, 1, false, "no timer runs on an idle connection"),
		reportCheck("errors", "count", 0, 0, 0, "the application sees no error",
			func(r *Report) (float64, bool) { return float64(len(r.AppErrors)), true }),
	}}
}

// packetsDuringOutage counts packets seen while the first drop rule was in
// force: after its fault-on event in the timeline (on a zero-delay virtual
// link the handshake shares the rule's start instant, so time alone cannot
// tell) and before it ended.
func packetsDuringOutage(r *Report) (float64, bool) {
	w, ok := firstOutage(r)
	if !ok {
		return 0, false
	}
	n, on := 0, false
	for _, ev := range r.Timeline {
		on = on || ev.Kind == EventFaultOn && ev.T == w.Start
		if on && ev.Packet != nil && ev.T < w.End {
			n++
		}
	}
	return float64(n), true
}

// keepaliveScenario is the seed's remedy: heartbeats find the dead link.
func keepaliveScenario() Scenario {
	return Scenario{
		Name:    "keepalive",
		Summary: "idle connection with keepalive during an outage: probes, then ETIMEDOUT after idle + intvl × count",
		Params: []Param{
			{Name: "idle", Kind: KindDuration, Default: "1s", Min: "1s", Max: "2h", Step: "1s",
				Help: "TCP_KEEPIDLE: idle time before the first probe (whole seconds)"},
			{Name: "intvl", Kind: KindDuration, Default: "1s", Min: "1s", Max: "2h", Step: "1s",
				Help: "TCP_KEEPINTVL: time between probes (whole seconds)"},
			{Name: "count", Kind: KindInt, Default: "3", Min: "1", Max: "127",
				Help: "TCP_KEEPCNT: unanswered probes before the connection is dropped"},
		},
		Run:     runKeepalive,
		Expect:  nominal(preciseKeepalive),
		Precise: preciseKeepalive,
	}
}

func runKeepalive(ctx context.Context, env runEnv, p Params, r *recorder) error {
	opts := SockOpts{KeepIdle: p.Duration("idle"), KeepIntvl: p.Duration("intvl"), KeepCnt: p.Int("count")}
	c, err := env.Dial(ctx, portEcho, opts)
	if err != nil {
		return fmt.Errorf("connect to the peer's echo service: %w", err)
	}
	defer c.Close()
	if _, err := env.AddFault("drop"); err != nil {
		return err
	}
	r.Anchor("outage starts on the idle connection")
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return outcomeOf(ctx, r, "recv", err)
	}
	return fmt.Errorf("recv returned %d bytes although every packet is dropped", n)
}

func preciseKeepalive(p Params, c Conditions) Theory {
	idle, intvl, cnt := p.Duration("idle"), p.Duration("intvl"), p.Int("count")
	// Both stacks count the idle time from the last packet received; the
	// probes and the end follow on the keepalive timer.
	var probes []firingRange
	var end firingRange
	from := c.LastReceived
	basis := "the timer, armed when the connection was established, fires after TCP_KEEPIDLE and finds it idle that long since the last packet received: probe; every TCP_KEEPINTVL another; the firing after TCP_KEEPCNT unanswered probes ends it (tcp_keepalive_timer); timers in jiffies, rounded up by the timer wheel"
	if c.Kernel {
		one := kernelClock{hz: c.hz()}.timerChain([]time.Duration{time.Second})[0]
		basis += fmt.Sprintf(" (at HZ %d a 1 s timer fires %s–%s after it was armed)", c.hz(), fmtSecs(one.Lo+kernelClock{hz: c.hz()}.jiffy()), fmtSecs(one.Hi))
	}
	if idle == time.Second && intvl == time.Second && cnt == 3 {
		basis += "; FACTS (measured): 1/1/3 → 4.08–4.10 s after the last packet received"
	}
	if c.Kernel {
		probes, end = kernelClock{hz: c.hz()}.keepaliveEnd(idle, intvl, cnt)
	} else {
		// gVisor's timer runs on the stack clock, from when the client
		// got the last packet (a link delay after the fault layer saw it).
		from += c.LinkDelay
		for i := 0; i < cnt; i++ {
			at := idle + time.Duration(i)*intvl
			probes = append(probes, firingRange{Kind: "keepalive", N: i + 1, Lo: at, Hi: at})
		}
		at := idle + time.Duration(cnt)*intvl
		end = firingRange{Kind: "end", Lo: at, Hi: at}
		basis = "gVisor's keepalive timer fires TCP_KEEPIDLE after the last packet received, then every TCP_KEEPINTVL; after TCP_KEEPCNT unanswered probes the next firing ends it (keepaliveTimerExpired)"
	}
	tol := c.tolerance()
	lo, hi := from+end.Lo, from+end.Hi
	th := Theory{Outcome: "ETIMEDOUT", At: (lo + hi) / 2, AtLo: max(lo-tol, 0), AtHi: hi + tol,
		AtBasis: basis + fmt.Sprintf("; the last packet was received %s before the anchor; ", fmtDur(-c.LastReceived)) + c.describeClient()}
	seen := from
	if !c.Kernel {
		seen += c.LinkDelay
	}
	th.Checks = append(th.Checks,
		countCheck("keepalive probes", "in", "keepalive-probe", cnt, cnt, cnt, "TCP_KEEPCNT probes, then the connection is dropped"),
		seriesCheck("probe times", "keepalive-probe", probes, seen, tol,
			"TCP_KEEPIDLE after the last packet received, then every TCP_KEEPINTVL; keepalive probes do not back off"),
	)
	return th
}

// synTimeoutScenario connects while the link is down.
func synTimeoutScenario() Scenario {
	return Scenario{
		Name:    "syn-timeout",
		Summary: "connect during an outage: SYN backoff 1, 2, 4 s… then ETIMEDOUT, or a late success",
		Params: []Param{
			{Name: "syn-retries", Kind: KindInt, Default: "2", Min: "1", Max: "10",
				Help: "net.ipv4.tcp_syn_retries in the private namespace (Linux default 6 ≈ 127 s; 2 ≈ 7 s)"},
			{Name: "outage", Kind: KindDuration, Default: "0s", Max: "1h",
				Help: "0 = the link stays down; otherwise it comes back after this long and connect may succeed late"},
			{Name: "linear-timeouts", Kind: KindInt, Default: "0", Min: "0", Max: "20",
				Help: "net.ipv4.tcp_syn_linear_timeouts: SYNs resent every 1 s this many times before the backoff doubles (recent Linux defaults to 4: 1, 1, 1, 1, 1, 2, 4 s; 0 = the classic 1, 2, 4 s)"},
		},
		Run:     runSynTimeout,
		Expect:  nominal(preciseSynTimeout),
		Precise: preciseSynTimeout,
	}
}

func runSynTimeout(ctx context.Context, env runEnv, p Params, r *recorder) error {
	if err := env.SetSysctl("net.ipv4.tcp_syn_retries", strconv.Itoa(p.Int("syn-retries"))); err != nil {
		return err
	}
	linear := p.Int("linear-timeouts")
	if err := env.SetSysctl("net.ipv4.tcp_syn_linear_timeouts", strconv.Itoa(linear)); err != nil {
		if linear != 0 {
			return err
		}
		env.Note(EventNote, "no tcp_syn_linear_timeouts here (%v): the SYN backoff is the classic one", err)
	}
	spec := "drop"
	if d := p.Duration("outage"); d > 0 {
		spec = fmt.Sprintf("drop for=%s", d)
	}
	if _, err := env.AddFault(spec); err != nil {
		return err
	}
	r.Anchor("connect starts into the dead link")
	c, err := env.Dial(ctx, portHTTP, SockOpts{NoWaitAccept: true})
	if err != nil {
		return outcomeOf(ctx, r, "connect", err)
	}
	defer c.Close()
	r.Outcome(OutcomeConnected, "connect succeeded %s after it started", seconds(r.Now()-r.anchorTime()))
	return nil
}

func preciseSynTimeout(p Params, c Conditions) Theory {
	n, d, linear := p.Int("syn-retries"), p.Duration("outage"), p.Int("linear-timeouts")
	kernel := c.Kernel
	if !kernel {
		// gVisor's handshake has no syn-retries knob (it ignores
		// TCPSynRetriesOption) and no linear timeouts: it always resends
		// the SYN 6 times, at 1, 3, 7 … 63 s, and fails at 127 s.
		n, linear = gvisorSynRetries, 0
	}
	// The SYN timer's firings, times after connect() started: on the
	// kernel the exec report's model (predictSyn: jiffies, the timer
	// wheel's rounding over every phase, a late handler, the retry limit
	// checked at each firing); on gVisor's virtual clock exact.
	var chain []firingRange
	var ending firingRange
	minRetx, maxRetx := 0, 0
	var boundaryNote string
	if kernel {
		ps := kernelClock{hz: c.hz()}.predictSyn(n, linear, 0)
		chain, ending, minRetx, maxRetx = ps.Firings, ps.End, ps.MinRetx, ps.MaxRetx
		boundaryNote = fmt.Sprintf("tcp_syn_retries=%d: connect gives up at the first SYN timer firing at or past tcp_model_timeout(%d, 1 s) = %s after the first SYN; the timer runs on jiffies (HZ %d), rounded up by the timer wheel", n, n, synBoundary(n), c.hz())
	} else {
		at, k := synTimeout(n, linear)
		for i, f := range synFires(linear, k+1) {
			chain = append(chain, firingRange{Kind: "timer", N: i + 1, Lo: f, Hi: f})
		}
		ending, minRetx, maxRetx = firingRange{Kind: "end", Lo: at, Hi: at}, k, k
		boundaryNote = "gVisor's handshake resends the SYN 6 times (1, 2, 4 … 32 s apart) and fails at 127 s; --syn-retries does not apply to it"
	}
	tol := c.tolerance()
	th := Theory{Outcome: "ETIMEDOUT", AtBasis: boundaryNote}
	lo, hi := ending.Lo, ending.Hi
	if at, k, ok := synRecovery(n, linear, d); d > 0 && ok && k <= len(chain) {
		// The first SYN sent after the link is back gets through; its
		// SYN-ACK comes back one RTT later.
		th = Theory{Outcome: OutcomeConnected, At: at, AtBasis: "the first SYN sent after the link is back gets through"}
		rtt := 2 * c.LinkDelay
		lo, hi = chain[k-1].Lo+rtt, chain[k-1].Hi+rtt
		minRetx, maxRetx = k, k
		if kernel {
			th.AtBasis += fmt.Sprintf("; the SYN timer runs on jiffies (HZ %d), rounded up by the timer wheel", c.hz())
		}
	}
	th.At, th.AtLo, th.AtHi = (lo+hi)/2, max(lo-tol, 0), hi+tol
	th.Checks = append(th.Checks, countCheck("SYN retransmissions", "in", "retransmit", maxRetx, minRetx, maxRetx,
		fmt.Sprintf("one SYN each time the timer fires: %d at a constant 1 s, then doubling", linear+1)))
	if maxRetx > 0 {
		th.Checks = append(th.Checks, scheduleCheck("SYN times", chain[:maxRetx], c.LinkDelay, tol,
			"the SYN timer: 1 s (TCP_TIMEOUT_INIT), constant for the linear timeouts, then doubling; times after connect() started"))
	}
	// Ratios from the second retransmission on; the linear ones are 1.
	if minRetx >= linear+2 {
		th.Checks = append(th.Checks, synBackoffCheck(c, kernel, linear, minRetx, maxRetx))
	}
	return th
}

// synBackoffCheck is syn-timeout's backoff row: exact on gVisor's clock
// (its six steps stay under the 120 s cap); on the kernel each SYN timer
// step is rounded up by the timer wheel and may run late, and each
// interval is read within the run's tolerance (kernelBackoffCheck).
func synBackoffCheck(c Conditions, kernel bool, linear, nLo, nHi int) Check {
	why := "after the linear timeouts the SYN RTO doubles: 1, 2, 4 s…"
	if !kernel {
		return backoffCheck("backoff ratio", "in", "retransmit", linear, 2, 2, 2, why+"; virtual clock: exact")
	}
	fires := synFires(linear, nHi)
	steps := make([]time.Duration, len(fires))
	prev := time.Duration(0)
	for i, f := range fires {
		steps[i], prev = f-prev, f
	}
	return kernelBackoffCheck("backoff ratio", "retransmit", linear, steps, c, nLo, nHi, why)
}

// gvisorSynRetries is how many times gVisor resends a SYN before connect
// fails, whatever TCPSynRetriesOption says.
const gvisorSynRetries = 6

// halfOpenScenario makes the peer forget the connection behind the
// client's back.
func halfOpenScenario() Scenario {
	return Scenario{
		Name:    "half-open",
		Summary: "the peer forgets the connection during an outage: the next send meets an RST, ECONNRESET",
		Params: []Param{
			{Name: "outage", Kind: KindDuration, Default: "2s", Min: "100ms", Max: "1h",
				Help: "how long the link is down; the peer forgets the connection at its start"},
		},
		Run:     runHalfOpen,
		Expect:  nominal(preciseHalfOpen),
		Precise: preciseHalfOpen,
	}
}

func runHalfOpen(ctx context.Context, env runEnv, p Params, r *recorder) error {
	d := p.Duration("outage")
	c, err := env.Dial(ctx, portEcho, SockOpts{})
	if err != nil {
		return fmt.Errorf("connect to the peer's echo service: %w", err)
	}
	defer c.Close()
	if _, err := env.AddFault(fmt.Sprintf("drop for=%s", d)); err != nil {
		return err
	}
	r.Anchor("outage starts")
	n, err := env.Peer().Forget()
	if err != nil {
		return err
	}
	if n == 0 {
		return errors.New("the peer had no connection to forget")
	}
	if err := env.Sleep(ctx, d+settle); err != nil {
		return err
	}
	if err := echo(ctx, env, c, r); err != nil {
		return err
	}
	if !r.HasOutcome() {
		return errors.New("the peer answered on a connection it had forgotten")
	}
	return nil
}

// rstCounter counts RSTs from the peer with the given verdict.
func rstCounter(verdict string) func(r *Report) (float64, bool) {
	return func(r *Report) (float64, bool) {
		n := 0
		for _, ev := range r.Timeline {
			if p := ev.Packet; p != nil && p.Dir == "out" && p.Verdict == verdict && containsRune(p.Flags, 'R') {
				n++
			}
		}
		return float64(n), true
	}
}

func containsRune(s string, c rune) bool {
	for _, x := range s {
		if x == c {
			return true
		}
	}
	return false
}

// peerRetransmitScenario loses the client's ACKs, so the peer (gVisor) is
// the one retransmitting.
func peerRetransmitScenario() Scenario {
	return Scenario{
		Name:    "peer-retransmit",
		Streams: true,
		Summary: "the client's ACKs are lost: gVisor's own RTO backoff, the peer gives up, the client's next send gets ECONNRESET",
		Params: []Param{
			{Name: "peer-timeout", Kind: KindDuration, Default: "4s", Min: "500ms", Max: "30m",
				Help: "TCP_USER_TIMEOUT set on the peer's connection: gVisor gives up this long after its oldest unacknowledged segment"},
			{Name: "warmup", Kind: KindSize, Default: "64KiB", Min: "1", Max: "64MiB",
				Help: "bytes the client reads from the source service before its ACKs are dropped"},
		},
		Run:     runPeerRetransmit,
		Expect:  nominal(precisePeerRetransmit),
		Precise: precisePeerRetransmit,
	}
}

// peerPoll is how often the client checks, between reads, whether the peer
// gave up.
const peerPoll = 250 * time.Millisecond

func runPeerRetransmit(ctx context.Context, env runEnv, p Params, r *recorder) error {
	pt := p.Duration("peer-timeout")
	c, err := env.Dial(ctx, portSource, SockOpts{})
	if err != nil {
		return fmt.Errorf("connect to the peer's source service: %w", err)
	}
	defer c.Close()
	buf := make([]byte, 64<<10)
	for got := int64(0); got < p.Size("warmup"); {
		n, err := c.Read(buf)
		if err != nil {
			return outcomeOf(ctx, r, "recv", err)
		}
		got += int64(n)
	}
	if n, err := env.Peer().SetUserTimeout(portSource, pt); err != nil {
		return err
	} else if n == 0 {
		return errors.New("the peer has no connection on the source port")
	}
	if cs := env.Peer().Conns(portSource); len(cs) > 0 && cs[0].RTO > 0 {
		r.Measure("peer RTO before the drop", cs[0].RTO.Seconds(), "s")
	}
	id, err := env.AddFault("drop dir=in")
	if err != nil {
		return err
	}
	r.Anchor("the client's packets (its ACKs) are dropped from now on")
	anchor := env.Now()
	var after int64
	lastData := anchor
	limit := 2*pt + 30*time.Second
	gone := func() bool { return len(env.Peer().Conns(portSource)) == 0 }
	// On the virtual clock the read wakes at the instant the peer drops
	// the connection, so the give-up time is exact; a kernel socket cannot
	// wait on the peer, so the real client polls every peerPoll.
	ur, exact := c.(untilReader)
	for !gone() {
		if env.Now()-anchor > limit {
			return fmt.Errorf("the peer did not give up within %s", limit)
		}
		var n int
		var err error
		if exact {
			if err := c.SetDeadline(anchor + limit); err != nil {
				return err
			}
			var stopped bool
			n, stopped, err = ur.readUntil(buf, gone)
			if errors.Is(err, errors.ErrUnsupported) {
				exact = false
				continue
			}
			if stopped {
				break
			}
		} else {
			if err := c.SetDeadline(env.Now() + peerPoll); err != nil {
				return err
			}
			n, err = c.Read(buf)
		}
		if n > 0 {
			after += int64(n)
			lastData = env.Now()
		}
		if err != nil && !isDeadline(err) {
			return outcomeOf(ctx, r, "recv", err)
		}
	}
	gaveUp := env.Now()
	env.Note(EventPeer, "the peer has given up on the connection")
	r.Measure("received after the drop", float64(after), "bytes")
	r.Measure("data stopped after", (lastData - anchor).Seconds(), "s")
	r.Measure("peer gave up after", (gaveUp - anchor).Seconds(), "s")
	if err := env.RemoveFault(id); err != nil {
		return err
	}
	// The peer answers the next segment with an RST; bound the wait in
	// case it does not.
	if err := c.SetDeadline(env.Now() + 30*time.Second); err != nil {
		return err
	}
	if _, err := c.Write(ping); err != nil {
		return outcomeOf(ctx, r, "send", err)
	}
	for {
		if _, err := c.Read(buf); err != nil {
			return outcomeOf(ctx, r, "recv", err)
		}
	}
}

// gvisorPeerRTOs returns when the peer retransmits its oldest segment,
// from an RTO of rto (200 ms minimum on a fast link), doubling.
func gvisorPeerRTOs(rto, within time.Duration) []time.Duration {
	var out []time.Duration
	t, step := time.Duration(0), rto
	for {
		t += step
		if t >= within {
			return out
		}
		out = append(out, t)
		step = min(2*step, gvisorRTOMax)
	}
}

func preciseHalfOpen(p Params, c Conditions) Theory {
	d := p.Duration("outage")
	// After the outage (and settle) the client sends; the peer's RST comes
	// back one RTT later.
	rtt := c.RTT
	if c.Virtual {
		rtt = 2 * c.LinkDelay
	}
	tol := c.tolerance()
	at := d + settle
	return Theory{
		Outcome: "ECONNRESET", At: at + rtt, AtLo: max(at-tol, 0), AtHi: at + rtt + tol,
		AtBasis: "the first segment after the outage reaches a peer without the connection, which answers with an RST one RTT later; " + c.describeClient(),
		Checks: []Check{
			reportCheck("peer's RST lost in the outage", "count", 1, 1, 1,
				"the peer aborted the connection with one RST, which died in the outage, so the client never knew",
				rstCounter("drop")),
			reportCheck("RST answering the client", "count", 1, 1, 1,
				"the client's one segment for a connection the peer does not know is answered with one RST (RFC 793)",
				rstCounter("pass")),
		},
	}
}

// peerGaveUpCheck is the row for when gVisor gives up. retransmitTimerExpired
// (snd.go) counts the user timeout from the original transmission of the
// segment it first retransmits (firstRetransmittedSegXmitTime) and caps
// each doubled RTO to what is left of it, so a firing lands exactly on
// that send + TCP_USER_TIMEOUT and returns ErrTimeout there (the peer's
// 15-retry limit, xmitCount > maxRetries, is only reached by user timeouts
// of ≈ 15 min and more). On the virtual clock the client wakes at that
// instant and the timeline holds the send: the row is exact. On the real
// clock the client polls every peerPoll and the peer's timer runs late by
// scheduling: from the send (when the timeline holds it; otherwise from
// the anchor less one peer RTO, the longest a segment can have been
// unacknowledged before the drop without being retransmitted) + the user
// timeout, to that + one poll, each widened by the run's tolerance (two
// jiffies + twice the measured RTT).
func peerGaveUpCheck(pt, rto time.Duration, c Conditions) Check {
	const name = "peer gave up after"
	if c.Virtual && c.HasPeerFirstSent {
		at := c.PeerFirstSent + pt
		return measured(name, "s", at.Seconds(), at.Seconds(), at.Seconds(), false,
			fmt.Sprintf("gVisor gives up TCP_USER_TIMEOUT after the original send of the segment it retransmits (%s): retransmitTimerExpired caps the last RTO to what is left, so a firing lands on it; exact on the virtual clock", sinceAnchor(c.PeerFirstSent)))
	}
	tol := c.tolerance()
	lo, hi := pt-rto, pt
	from := fmt.Sprintf("the anchor less one peer RTO (%s)", fmtDur(rto))
	if c.HasPeerFirstSent {
		lo, hi = c.PeerFirstSent+pt, c.PeerFirstSent+pt
		from = fmt.Sprintf("the original send of the segment it retransmits (%s)", sinceAnchor(c.PeerFirstSent))
	}
	want := (lo + hi) / 2
	return measured(name, "s", want.Seconds(), (lo - tol).Seconds(), (hi + peerPoll + tol).Seconds(), true,
		fmt.Sprintf("gVisor gives up TCP_USER_TIMEOUT after %s (retransmitTimerExpired caps the last RTO to what is left); the client notices within one poll (%s); ± %s (%s)",
			from, fmtDur(peerPoll), fmtDur(tol), c.describeClient()))
}

// sinceAnchor says where a time relative to the anchor lies.
func sinceAnchor(d time.Duration) string {
	if d < 0 {
		return fmt.Sprintf("%.3f s before the anchor", (-d).Seconds())
	}
	return fmt.Sprintf("%.3f s after the anchor", d.Seconds())
}

func precisePeerRetransmit(p Params, c Conditions) Theory {
	pt := p.Duration("peer-timeout")
	rto := c.PeerRTO
	if rto <= 0 {
		rto = 200 * time.Millisecond // the minimum, on a fast link
	}
	want := len(gvisorPeerRTOs(rto, pt))
	th := Theory{Outcome: "ECONNRESET", Checks: []Check{
		peerGaveUpCheck(pt, rto, c),
		{Name: "peer retransmissions", Unit: "count", Want: float64(want), Min: float64(want), Max: float64(want),
			Basis: fmt.Sprintf("retransmissions of the oldest segment, one per RTO firing before the user timeout: the peer's RTO %s (read before the drop), doubling; the peer has RACK off, so no tail-loss probe", fmtDur(rto)),
			measure: func(r *Report) (float64, bool) {
				return float64(len(longestSeries(r, "out", "retransmit"))), true
			}},
	}}
	if want >= 3 {
		th.Checks = append(th.Checks, peerBackoffCheck(c, rto, want))
	}
	return th
}

// peerBackoffCheck is peer-retransmit's backoff row. The doubling is
// exact on the virtual clock while the RTO stays under gVisor's 120 s cap
// (the capped tail lowers the median only when most steps are capped: not
// for timeouts under ≈ 20 min). On the real clock gVisor's timers run on
// Go's, each interval read within the run's tolerance; the first interval
// is left out there: it runs from the segment's original send, and the
// timer may have been armed (by an earlier send or ACK) before it.
func peerBackoffCheck(c Conditions, rto time.Duration, n int) Check {
	const name = "peer backoff ratio"
	why := "gVisor doubles its RTO at each timeout (snd.go)"
	if c.Virtual {
		if rto<<uint(n) <= gvisorRTOMax {
			return backoffCheck(name, "out", "retransmit", 0, 2, 2, 2, why+"; exact on the virtual clock")
		}
		return backoffCheck(name, "out", "retransmit", 0, 2, looseRatioLo, looseRatioHi, why+", up to its 120 s cap")
	}
	steps := make([]span, n)
	for i, st := 0, rto; i < n; i, st = i+1, min(2*st, gvisorRTOMax) {
		steps[i] = span{st, st}
	}
	return boundedBackoffCheck(name, "out", "retransmit", 1, steps, c, n, n,
		why+", from the second retransmission on (the first interval runs from the original send, and the timer may be older)",
		fmt.Sprintf("steps of the peer's RTO %s, doubling", fmtDur(rto)))
}
