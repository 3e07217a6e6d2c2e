package scenarios

import (
	"fmt"
	"strings"
	"time"
)

// Linux TCP constants the connection theory uses (FACTS.md, "Linux kernel
// TCP").
const (
	linuxRTOMin = 200 * time.Millisecond
	linuxRTOMax = 120 * time.Second
	// linuxJiffy is one tick at HZ=250, the timer wheel's unit on the
	// machines FACTS.md was measured on.
	linuxJiffy = 4 * time.Millisecond
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
	// RTO is the connection's retransmission timeout before any backoff
	// (tcp_info's rto when the kernel view saw it, else the first
	// retransmission interval on the wire, else Linux's 200 ms minimum).
	RTO time.Duration `json:"rto_ns"`
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

// wheelGranularity is the rounding the kernel's timer wheel applies to a
// timer armed d ahead (kernel/time/timer.c: 64 buckets per level, each
// level 8 times coarser), at HZ=250.
func wheelGranularity(d time.Duration) time.Duration {
	j := int64(d / linuxJiffy)
	gran := int64(1)
	for start := int64(63); j >= start && gran < 1<<21; start <<= 3 {
		gran <<= 3
	}
	return time.Duration(gran) * linuxJiffy
}

// modelTimeout is the kernel's tcp_model_timeout: how long linear-then-
// capped exponential backoff from base takes for boundary retransmissions.
// retransmits_timed_out compares the time since the first RTO
// retransmission with it, always from the 200 ms base for an established
// connection.
func modelTimeout(boundary int, base time.Duration) time.Duration {
	thresh := 0
	for base<<(thresh+1) <= linuxRTOMax {
		thresh++
	}
	// ilog2(TCP_RTO_MAX / base)
	if boundary <= thresh {
		return time.Duration((2<<boundary)-1) * base
	}
	return time.Duration((2<<thresh)-1)*base + time.Duration(boundary-thresh)*linuxRTOMax
}

// InFlightTimeout predicts when a request sent into a dead link gets
// ETIMEDOUT, counted from its first transmission: the tail-loss probe and
// the first RTO retransmission go out one RTO apart (FACTS: +0.20, +0.20
// s), the first RTO retransmission starts the clock (retrans_stamp), each
// further RTO doubles up to 120 s, and the kernel checks only when an RTO
// fires. With TCP_USER_TIMEOUT the RTO is clamped to fire exactly when
// the user timeout runs out. by names what ends it.
func InFlightTimeout(s TimeoutSettings) (est Estimate, by string) {
	rto := s.RTO
	if rto <= 0 {
		rto = linuxRTOMin
	}
	stamp := 2 * rto // TLP at +RTO, first RTO retransmission at +2·RTO
	if s.UserTimeout > 0 {
		// The ≈ U + 0.41 s of FACTS at a 200 ms RTO.
		want := stamp + s.UserTimeout
		return Estimate{Want: want, Min: want - rto/2, Max: want + wheelGranularity(s.UserTimeout) + rto}, "TCP_USER_TIMEOUT"
	}
	boundary := modelTimeout(s.Retries2, linuxRTOMin)
	var elapsed, slackHalf, slack time.Duration
	cur := rto
	for elapsed < boundary {
		cur = min(2*cur, linuxRTOMax)
		g := wheelGranularity(cur)
		elapsed += cur
		slackHalf += g / 2
		slack += g
		// Each firing comes up to one wheel granularity late, so a
		// boundary within the slack is already crossed (FACTS: N=4 ends
		// at 6.7 s, not 13 s).
		if elapsed+slack >= boundary {
			break
		}
	}
	want := stamp + elapsed + slackHalf
	return Estimate{Want: want, Min: stamp + elapsed, Max: stamp + elapsed + slack + rto}, "tcp_retries2"
}

// IdleTimeout predicts when an idle connection on a dead link notices, from
// the last packet it received: never without keepalive; with it, after
// KeepIdle and one probe per KeepIntvl until KeepCnt went unanswered, or —
// with TCP_USER_TIMEOUT — at the first keepalive timer past the user
// timeout once a probe was sent (tcp_keepalive_timer). ok is false when
// it never notices.
func IdleTimeout(s TimeoutSettings) (est Estimate, by string, ok bool) {
	if !s.KeepAlive {
		return Estimate{}, "", false
	}
	intvl := max(s.KeepIntvl, time.Second)
	var at time.Duration
	for j := 1; ; j++ {
		at = s.KeepIdle + time.Duration(j)*intvl
		if s.UserTimeout > 0 && at >= s.UserTimeout {
			by = "keepalive + TCP_USER_TIMEOUT"
			break
		}
		if s.UserTimeout == 0 && j >= max(s.KeepCnt, 1) {
			by = "keepalive"
			break
		}
		if j > 1<<16 {
			break
		}
	}
	// 1 s keepalive timers round up on the wheel: FACTS' 1/1/3 → 4.08–4.10 s.
	n := at / intvl
	g := wheelGranularity(intvl)
	return Estimate{Want: at + n*g/2, Min: at, Max: at + n*g + 100*time.Millisecond}, by, true
}

// TheoryText is the one-paragraph theory for a connection with these
// settings, e.g. "no keepalive, no TCP_USER_TIMEOUT, tcp_retries2=15: a
// request in flight would wait ≈ 938 s; an idle pooled connection would
// never notice".
func TheoryText(s TimeoutSettings) string {
	var parts []string
	if s.KeepAlive {
		parts = append(parts, fmt.Sprintf("keepalive %s/%s/%d", shortSeconds(s.KeepIdle), shortSeconds(s.KeepIntvl), s.KeepCnt))
	} else {
		parts = append(parts, "no keepalive")
	}
	if s.UserTimeout > 0 {
		parts = append(parts, "TCP_USER_TIMEOUT "+shortSeconds(s.UserTimeout))
	} else {
		parts = append(parts, "no TCP_USER_TIMEOUT")
	}
	parts = append(parts, fmt.Sprintf("tcp_retries2=%d", s.Retries2))
	inflight, by := InFlightTimeout(s)
	text := strings.Join(parts, ", ") + fmt.Sprintf(": a request in flight would wait ≈ %s (%s)", shortSeconds(inflight.Want), by)
	if idle, iby, ok := IdleTimeout(s); ok {
		text += fmt.Sprintf("; an idle pooled connection would notice after ≈ %s of silence (%s)", shortSeconds(idle.Want), iby)
	} else {
		text += "; an idle pooled connection would never notice"
	}
	return text
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
