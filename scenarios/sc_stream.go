package scenarios

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"
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
// window counts as closed.
const fillWait = 200 * time.Millisecond

// fillLimit bounds the bytes written while filling the window.
const fillLimit = 256 << 20

func runZeroWindow(ctx context.Context, env Env, p Params, r *Recorder) error {
	c, err := env.Dial(ctx, portSink, SockOpts{UserTimeout: p.Duration("user-timeout")})
	if err != nil {
		return fmt.Errorf("connect to the peer's sink service: %w", err)
	}
	defer c.Close()
	chunk := bytes.Repeat([]byte("*"), 64<<10)
	var filled int64
	full, closed := time.Duration(-1), false
	for filled < fillLimit && !closed {
		start := env.Now()
		if err := c.SetDeadline(start + fillWait); err != nil {
			return err
		}
		n, err := c.Write(chunk)
		filled += int64(n)
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
	if at := u + kernelRTOMin; u > 0 && at+time.Second <= watch {
		th = Theory{Outcome: "ETIMEDOUT", At: at,
			AtBasis: "with TCP_USER_TIMEOUT Linux gives up once the window has stayed closed that long after the first probe, answered or not (tcp_probe_timer)"}
		endLo, endHi = at, at
	}
	// The closed window is probed with zero-window probes, or, when the
	// last segment went out beyond the window, by retransmitting it: both
	// on a timer from the RTO (at least 200 ms: tcp_probe0_base), doubling,
	// from when the window closed (the anchor).
	base := max(c.RTO, kernelRTOMin)
	var chain []firingRange
	if c.Kernel {
		var steps []time.Duration
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
	tol := c.tolerance()
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
	if !c.Kernel {
		// gVisor's client: not modelled as precisely; its probes follow
		// the 200 ms minimum RTO.
		lo, hi = max(lo-1, 1), hi+1
	}
	th.Checks = append(th.Checks, countCheck("window probes", "in", "zero-window-probe,retransmit", lo, lo, hi, basis))
	if lo >= 3 {
		th.Checks = append(th.Checks, backoffCheck("probe backoff ratio", "in", "zero-window-probe,retransmit", 0, 2, 1.6, 2.5,
			"each probe the peer answers with a closed window doubles the interval"))
	}
	return th
}

// lossScenario fetches files over a lossy link.
func lossScenario() Scenario {
	return Scenario{
		Name:    "loss",
		Streams: true,
		Summary: "random loss both ways during HTTP transfers: retransmissions, goodput, tail latency; every byte arrives",
		Params: []Param{
			{Name: "loss", Kind: KindPercent, Default: "5%", Min: "0%", Max: "50%",
				Help: "probability that a packet is lost, in each direction"},
			{Name: "requests", Kind: KindInt, Default: "10", Min: "1", Max: "1000",
				Help: "how many transfers, one connection each"},
			{Name: "size", Kind: KindSize, Default: "256KiB", Min: "1", Max: "1GiB",
				Help: "bytes per transfer (GET /bytes/N)"},
		},
		Run:    runLoss,
		Expect: expectLoss,
	}
}

func runLoss(ctx context.Context, env Env, p Params, r *Recorder) error {
	pct, reqs, size := p.Percent("loss"), p.Int("requests"), p.Size("size")
	if pct > 0 {
		if _, err := env.AddFault("loss " + strconv.FormatFloat(pct, 'g', -1, 64) + "%"); err != nil {
			return err
		}
	}
	r.Anchor("transfers start")
	request := []byte(fmt.Sprintf("GET /bytes/%d HTTP/1.0\r\n\r\n", size))
	start := env.Now()
	var total int64
	var lat []time.Duration
	for i := 1; i <= reqs; i++ {
		t0 := env.Now()
		c, err := env.Dial(ctx, portHTTP, SockOpts{})
		if err != nil {
			return outcomeOf(ctx, r, "connect", err)
		}
		if _, err := c.Write(request); err != nil {
			c.Close()
			return outcomeOf(ctx, r, "send", err)
		}
		resp, _, err := readAll(env, c)
		c.Close()
		if err != nil {
			return outcomeOf(ctx, r, "recv", err)
		}
		body, err := bytesBody(resp, size)
		if err != nil {
			return fmt.Errorf("transfer %d: %w", i, err)
		}
		total += int64(len(body))
		lat = append(lat, env.Now()-t0)
	}
	elapsed := env.Now() - start
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	r.Measure("bytes received", float64(total), "bytes")
	if elapsed > 0 {
		r.Measure("goodput", float64(total)/elapsed.Seconds(), "B/s")
	}
	r.Measure("latency p50", percentile(lat, 50).Seconds(), "s")
	r.Measure("latency p99", percentile(lat, 99).Seconds(), "s")
	r.Measure("latency max", lat[len(lat)-1].Seconds(), "s")
	r.Outcome(OutcomeRecovered, "all %d transfers complete (%s) despite %g%% loss each way", reqs, formatBytes(float64(total)), pct)
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

// patternLine is the unit of the byte pattern the peer's GET /bytes/N
// sends (see stack/services): 63 printable characters and a newline.
const patternLine = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-\n"

// bytesBody checks a GET /bytes/N response and returns its body.
func bytesBody(resp []byte, size int64) ([]byte, error) {
	head, body, ok := bytes.Cut(resp, []byte("\r\n\r\n"))
	if !ok || !bytes.HasPrefix(head, []byte("HTTP/1.0 200 ")) {
		return nil, fmt.Errorf("unexpected response: %.40q", resp)
	}
	if int64(len(body)) != size {
		return nil, fmt.Errorf("received %d of %d bytes", len(body), size)
	}
	for i, b := range body {
		if b != patternLine[i%len(patternLine)] {
			return nil, fmt.Errorf("byte %d is %q, not %q: data corrupted", i, b, patternLine[i%len(patternLine)])
		}
	}
	return body, nil
}

func expectLoss(p Params, kernel bool) Theory {
	pct, reqs, size := p.Percent("loss"), p.Int("requests"), p.Size("size")
	total := float64(int64(reqs) * size)
	segs := total / 1448
	want := math.Round(segs * pct / 100)
	lo := 0.0
	if want >= 5 {
		lo = 1
	}
	return Theory{Outcome: OutcomeRecovered, Checks: []Check{
		measured("bytes received", "bytes", total, total, total, false, "TCP delivers every byte, in order, whatever the loss"),
		reportCheck("retransmissions", "count", want, lo, inf, fmt.Sprintf("about one per lost data segment (%g%% of ≈%.0f)", pct, segs),
			func(r *Report) (float64, bool) {
				return float64(r.Packets.RetransmitsIn + r.Packets.RetransmitsOut), true
			}),
	}}
}
