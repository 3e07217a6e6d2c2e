package scenarios

import (
	"math/bits"
	"time"
)

// Kernel TCP timing, from FACTS.md (Linux ip-sysctl.rst, RFC 6298, and
// measurements on Linux 6.18 through the TUN).
const (
	// kernelRTOMin is TCP_RTO_MIN, the base tcp_retries2 is computed from.
	kernelRTOMin = 200 * time.Millisecond
	// kernelRTOMax caps every backoff step (TCP_RTO_MAX).
	kernelRTOMax = 120 * time.Second
	// synRTO is the initial RTO of a SYN: SYNs go out at 0, 1, 3, 7 s...
	synRTO = time.Second
)

// retries2Boundary is the kernel's tcp_model_timeout for tcp_retries2=n:
// the time the RTOs would take with a 200 ms base, doubling up to 120 s
// (n = 15 gives 924.6 s).
func retries2Boundary(n int) time.Duration { return modelTimeout(n, kernelRTOMin) }

// modelTimeout is the kernel's tcp_model_timeout: how long n timer
// firings take from base, doubling up to TCP_RTO_MAX, the limit
// retransmits_timed_out compares the time since the first retransmission
// with.
func modelTimeout(n int, base time.Duration) time.Duration {
	thresh := bits.Len64(uint64(kernelRTOMax/base)) - 1 // ilog2(TCP_RTO_MAX / base)
	if n <= thresh {
		return time.Duration((2<<n)-1) * base
	}
	return time.Duration((2<<thresh)-1)*base + time.Duration(n-thresh)*kernelRTOMax
}

// synFires returns when the SYN retransmission timer fires after the
// first SYN, n times: with tcp_syn_linear_timeouts = linear the first
// linear+1 steps are the 1 s initial RTO, then the steps double (capped at
// two minutes). Linux's ip-sysctl.rst: linear = 4 gives 1, 1, 1, 1, 1, 2,
// 4…; linear = 0 gives the classic 1, 2, 4…
func synFires(linear, n int) []time.Duration {
	out := make([]time.Duration, 0, n)
	t, step := time.Duration(0), synRTO
	for i := 0; i < n; i++ {
		t += step
		out = append(out, t)
		if i >= linear {
			step = min(2*step, kernelRTOMax)
		}
	}
	return out
}

// synBoundary is the kernel's tcp_model_timeout for tcp_syn_retries=n:
// the classic exponential schedule from a 1 s base, (2^(n+1) − 1) s for
// small n (6 gives 127 s). Linear timeouts do not change it.
func synBoundary(n int) time.Duration { return modelTimeout(n, synRTO) }

// synTimeout predicts connect() into a dead link with tcp_syn_retries n and
// tcp_syn_linear_timeouts linear: ETIMEDOUT at the first timer firing at or
// beyond the boundary, after the SYNs retransmitted at the earlier
// firings.
func synTimeout(n, linear int) (at time.Duration, retransmits int) {
	boundary := synBoundary(n)
	for i, t := range synFires(linear, 256) {
		if t >= boundary {
			return t, i
		}
	}
	return boundary, 0
}

// synRecovery predicts connect() during an outage of length d: it connects
// with the first SYN sent at or after d, unless the connect times out
// first.
func synRecovery(n, linear int, d time.Duration) (at time.Duration, retransmits int, ok bool) {
	if d <= 0 {
		return 0, 0, true
	}
	timeout, max := synTimeout(n, linear)
	for i, t := range synFires(linear, max) {
		if t >= d {
			return t, i + 1, true
		}
	}
	return timeout, max, false
}

// gVisor TCP timing (the client in virtual mode), from FACTS.md: without
// an RTT sample the RTO stays at its 1 s initial value; retransmissions go
// out at 1, 2, 4 … 64, 128, 248 … s (steps capped at 120 s). The model is
// gvisorSocket in ktimers.go.
const (
	gvisorInitialRTO = time.Second
	gvisorRTOMax     = 120 * time.Second
)

// persistTimes returns when a kernel sender probes a zero window: the
// persist timer starts at the RTO (200 ms minimum) and doubles.
func persistTimes(within time.Duration) []time.Duration {
	var out []time.Duration
	t, step := time.Duration(0), kernelRTOMin
	for {
		t += step
		if t > within {
			return out
		}
		out = append(out, t)
		step = min(2*step, kernelRTOMax)
	}
}
