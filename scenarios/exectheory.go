package scenarios

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// TimeoutSettings are what decides when the kernel gives up on a
// connection: the socket's own options and the namespace's sysctls.
type TimeoutSettings struct {
	// KeepAlive is SO_KEEPALIVE; KeepIdle, KeepIntvl and KeepCnt are the
	// effective TCP_KEEPIDLE/INTVL/CNT (the sysctl defaults unless set).
	KeepAlive bool          `json:"keepalive"`
	KeepIdle  time.Duration `json:"keepidle_ns"`
	KeepIntvl time.Duration `json:"keepintvl_ns"`
	KeepCnt   int           `json:"keepcnt"`
	// UserTimeout is TCP_USER_TIMEOUT (0: off).
	UserTimeout time.Duration `json:"user_timeout_ns"`
	// Retries2 is the namespace's net.ipv4.tcp_retries2.
	Retries2 int `json:"tcp_retries2"`
	// SynRetries is how many times connect() resends its SYN: TCP_SYNCNT
	// (effective: the namespace's tcp_syn_retries unless set);
	// SynLinear is the namespace's tcp_syn_linear_timeouts (0 on kernels
	// without it: the classic backoff).
	SynRetries int `json:"syn_retries"`
	SynLinear  int `json:"syn_linear_timeouts"`
	// RTO is the connection's retransmission timeout before any backoff
	// (tcp_info's rto when the kernel view saw it, else the first
	// retransmission interval on the wire; 0 when neither was seen, and the
	// theory then covers every RTO a sub-millisecond link can have).
	RTO time.Duration `json:"rto_ns"`
	// RTT is tcpi_rtt from the same reading (0: not read); the tail-loss
	// probe is due 2·RTT + 200 ms after a send.
	RTT time.Duration `json:"rtt_ns,omitempty"`
	// Source says where the socket options came from: "getsockopt" (read
	// from the program's descriptor) or "sysctl defaults" (the program's
	// socket could not be read; these are what an untouched socket has).
	Source string `json:"source"`
}

// Estimate is a predicted time with the range the kernel's timer wheel
// and jiffies allow.
type Estimate struct {
	Want time.Duration `json:"want_ns"`
	Min  time.Duration `json:"min_ns"`
	Max  time.Duration `json:"max_ns"`
}

// String renders "≈ 938.4 s" or "≈ 6.7 s (6.6 s – 6.9 s)".
func (e Estimate) String() string {
	return fmt.Sprintf("≈ %s (%s – %s)", shortSeconds(e.Want), shortSeconds(e.Min), shortSeconds(e.Max))
}

// conditions are the precise model's starting points for a socket with
// these settings: a kernel client on this machine's HZ with the socket's
// own RTO and RTT when sock_diag read them; else every RTO a
// sub-millisecond link can have (kernelRTO: 200 ms + its RTT in jiffies
// rounded up): first the TUN's nominal one, 200 ms + one jiffy, then 200
// ms for an RTT below a microsecond.
func (s TimeoutSettings) conditions() []Conditions {
	c := nominalConditions(true)
	c.Virtual = false
	if s.RTO > 0 {
		c.RTO, c.RTT, c.Measured = s.RTO, s.RTT, true
		return []Conditions{c}
	}
	lo := c
	lo.RTT, lo.RTO = 0, kernelRTO(c.hz(), 0)
	return []Conditions{c, lo}
}

// tolerance is how far a measured timeout may lie outside the model's
// range: the real clock's (two jiffies and twice the RTT: handlers running
// late, the packet reaching the fault layer and the program waking up),
// plus one jiffy and a millisecond because the report times a kernel
// timeout across two clocks: its start on the wire, its end from
// sock_diag (kernelGaveUp: between the timer's due time, which counts
// whole milliseconds from the jiffies counter, or the last sample that
// listed the socket, and the first that did not).
func (s TimeoutSettings) tolerance(c Conditions) time.Duration {
	return c.tolerance() + kernelClock{hz: c.hz()}.jiffy() + time.Millisecond
}

// InFlightTimeout predicts when a request sent into a dead link gets
// ETIMEDOUT, counted from its first transmission, with the kernel model of
// ktimers.go (predictData): the tail-loss probe, RTO #1 restarted from it,
// doubling up to 120 s, each firing rounded by the timer wheel over every
// jiffies phase; the firing that finds tcp_model_timeout(tcp_retries2)
// (or TCP_USER_TIMEOUT, which also clamps the RTO) used up since RTO #1
// ends it. Want is the most likely ending firing's midpoint, Min–Max
// covers every possible ending firing (for every possible RTO when the
// socket's was not read), widened by the tolerance. by names the limit.
func InFlightTimeout(s TimeoutSettings) (est Estimate, by string) {
	est, by, _ = inFlightPlan(s)
	return est, by
}

// inFlightPlan is InFlightTimeout with the model's plan behind Want (the
// first of the conditions).
func inFlightPlan(s TimeoutSettings) (Estimate, string, dataPlan) {
	by := "tcp_retries2"
	if s.UserTimeout > 0 {
		by = "TCP_USER_TIMEOUT"
	}
	var est Estimate
	var first dataPlan
	for i, c := range s.conditions() {
		plan := planData(c, 1, s.Retries2, s.UserTimeout)
		lo, hi := plan.endRange()
		lo, hi = lo-s.tolerance(c), hi+s.tolerance(c)
		if i == 0 {
			first = plan
			e := plan.likely()
			est = Estimate{Want: (e.Lo + e.Hi) / 2, Min: lo, Max: hi}
		}
		est.Min, est.Max = min(est.Min, lo), max(est.Max, hi)
	}
	return est, by, first
}

// connectTimeout predicts when connect() into a dead link fails with
// ETIMEDOUT, counted from the first SYN, with the kernel's SYN timer model
// (predictSyn in ktimers.go): SynLinear+1 firings 1 s apart, then
// doubling, each rounded by the timer wheel over every jiffies phase; the
// firing that finds tcp_model_timeout(SynRetries, 1 s) — or
// TCP_USER_TIMEOUT, which also clamps the timer — used up since the first
// SYN ends it. The plan holds the firings behind the estimate.
func connectTimeout(s TimeoutSettings) (Estimate, synPrediction) {
	c := s.conditions()[0]
	p := kernelClock{hz: c.hz()}.predictSyn(max(s.SynRetries, 1), max(s.SynLinear, 0), s.UserTimeout)
	tol := s.tolerance(c)
	return Estimate{Want: (p.End.Lo + p.End.Hi) / 2, Min: p.End.Lo - tol, Max: p.End.Hi + tol}, p
}

// connectPhrase says what decides a connect() into a dead link, with the
// numbers the model used: "connect() failing with ETIMEDOUT ≈ 134 s (…)
// after the first SYN: 6 SYN retries (the namespace's tcp_syn_retries),
// tcp_syn_linear_timeouts=4, HZ 250: SYNs resent at 1, 2, 3, 4, 5, 7, 11,
// 19, 35, 67 s (10 retransmissions), ending at the first firing at or
// past tcp_model_timeout(6, 1 s) = 127 s after the first SYN" (the timer
// wheel rounds the long steps up).
func connectPhrase(s TimeoutSettings) string {
	est, p := connectTimeout(s)
	src := "the namespace's tcp_syn_retries"
	if s.Source == "getsockopt" {
		src = "TCP_SYNCNT, read from the socket"
	}
	var at []string
	for _, f := range synFires(max(s.SynLinear, 0), p.MaxRetx) {
		at = append(at, strconv.FormatFloat(f.Seconds(), 'f', -1, 64))
	}
	secs := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + " s" }
	limit := fmt.Sprintf("tcp_model_timeout(%d, 1 s) = %s", s.SynRetries, secs(p.Limit))
	if p.UserTime {
		limit = "TCP_USER_TIMEOUT " + secs(p.Limit) + " (it replaces the SYN retry limit and clamps the timer)"
	}
	resent := "no SYN resent"
	if len(at) > 0 {
		resent = "SYNs resent at " + strings.Join(at, ", ") + " s"
	}
	retx := fmt.Sprint(p.MinRetx) + " retransmission"
	if p.MaxRetx != p.MinRetx {
		retx = fmt.Sprintf("%d–%d retransmission", p.MinRetx, p.MaxRetx)
	}
	if p.MaxRetx != 1 {
		retx += "s"
	}
	return fmt.Sprintf("connect() failing with ETIMEDOUT %s after the first SYN: %d SYN retries (%s), tcp_syn_linear_timeouts=%d, HZ %d: %s (%s), ending at the first firing at or past %s after the first SYN",
		est, s.SynRetries, src, max(s.SynLinear, 0), s.conditions()[0].hz(), resent, retx, limit)
}

// IdleTimeout predicts when an idle connection on a dead link notices, from
// the last packet it received, with the kernel's keepalive timer model
// (keepaliveEnd): never without keepalive; with it, after KeepIdle and one
// probe per KeepIntvl until KeepCnt went unanswered, or — with
// TCP_USER_TIMEOUT — at the first keepalive firing past the user timeout
// once a probe was sent (tcp_keepalive_timer). ok is false when it never
// notices.
func IdleTimeout(s TimeoutSettings) (est Estimate, by string, ok bool) {
	if !s.KeepAlive {
		return Estimate{}, "", false
	}
	intvl := max(s.KeepIntvl, time.Second)
	probes := max(s.KeepCnt, 1)
	by = "keepalive"
	if s.UserTimeout > 0 {
		// Firing j (0 the first, after KeepIdle) is at KeepIdle + j·intvl;
		// the first at or past the user timeout after a probe ends it.
		probes = 1
		for s.KeepIdle+time.Duration(probes)*intvl < s.UserTimeout && probes < 1<<16 {
			probes++
		}
		by = "keepalive + TCP_USER_TIMEOUT"
	}
	c := s.conditions()[0]
	_, end := kernelClock{hz: c.hz()}.keepaliveEnd(s.KeepIdle, intvl, probes)
	// The wheel model's range (each firing rounded up, the first on a
	// level up to 131 s coarse for a 2 h idle time) starts above the
	// timers' nominal due time; Min keeps that, which no timer beats.
	nominal := s.KeepIdle + time.Duration(probes)*intvl
	return Estimate{Want: (end.Lo + end.Hi) / 2, Min: min(nominal, end.Lo) - s.tolerance(c), Max: end.Hi + s.tolerance(c)}, by, true
}

// settingsPhrase names the settings that decide a timeout: "no keepalive,
// no TCP_USER_TIMEOUT, tcp_retries2=15".
func settingsPhrase(s TimeoutSettings) string {
	var parts []string
	if s.KeepAlive {
		parts = append(parts, fmt.Sprintf("keepalive idle %s, interval %s, %d probes", shortSeconds(s.KeepIdle), shortSeconds(s.KeepIntvl), s.KeepCnt))
	} else {
		parts = append(parts, "no keepalive")
	}
	if s.UserTimeout > 0 {
		parts = append(parts, "TCP_USER_TIMEOUT "+shortSeconds(s.UserTimeout))
	} else {
		parts = append(parts, "no TCP_USER_TIMEOUT")
	}
	parts = append(parts, fmt.Sprintf("tcp_retries2=%d", s.Retries2))
	return strings.Join(parts, ", ")
}

// TheoryText is the one-paragraph theory for a connection with these
// settings, e.g. "no keepalive, no TCP_USER_TIMEOUT, tcp_retries2=15: a
// request in flight would wait ≈ 938 s; an idle pooled connection would
// never notice".
func TheoryText(s TimeoutSettings) string {
	inflight, by, plan := inFlightPlan(s)
	text := settingsPhrase(s) + fmt.Sprintf(": a request in flight would wait ≈ %s (%s: %s)", shortSeconds(inflight.Want), by, endsPhrase(plan))
	if idle, iby, ok := IdleTimeout(s); ok {
		text += fmt.Sprintf("; an idle pooled connection would notice after ≈ %s of silence (%s)", shortSeconds(idle.Want), iby)
	} else {
		text += "; an idle pooled connection would never notice"
	}
	return text
}

// endsPhrase names the firings that may end a request in flight, most
// likely first: "RTO #5" or "RTO #5 62%, RTO #6 38%".
func endsPhrase(p dataPlan) string {
	var parts []string
	for _, e := range p.Ends {
		if len(p.Ends) == 1 {
			return fmt.Sprintf("RTO #%d", e.N)
		}
		parts = append(parts, fmt.Sprintf("RTO #%d %.0f%%", e.N, 100*e.Odds))
	}
	return strings.Join(parts, ", ")
}

// shortSeconds prints a duration in seconds with up to one decimal for
// long ones: "940 s", "6.7 s", "0.51 s".
func shortSeconds(d time.Duration) string {
	s := d.Seconds()
	switch {
	case s >= 100:
		return fmt.Sprintf("%.0f s", s)
	case s >= 10:
		return fmt.Sprintf("%.1f s", s)
	case s >= 1:
		return fmt.Sprintf("%.2f s", s)
	}
	return fmt.Sprintf("%.3f s", s)
}
