package scenarios

import "time"

// Kernel TCP timing, from FACTS.md (Linux ip-sysctl.rst, RFC 6298, and
// measurements on Linux 6.18 through the TUN).
const (
	// kernelRTOMin is TCP_RTO_MIN, the base tcp_retries2 is computed from.
	kernelRTOMin = 200 * time.Millisecond
	// kernelRTO is the effective RTO on the TUN link: the 200 ms minimum
	// plus timer granularity. FACTS measures the backoff as +0.41, +0.83,
	// +1.63, +3.33, +6.65 s: 207.5 ms doubling.
	kernelRTO = 207500 * time.Microsecond
	// kernelTLP is when the tail-loss probe retransmits after a send
	// (+0.20 s), and the first RTO follows it by kernelRTOMin.
	kernelTLP = 200 * time.Millisecond
	// kernelRTOMax caps every backoff step (TCP_RTO_MAX).
	kernelRTOMax = 120 * time.Second
	// synRTO is the initial RTO of a SYN: SYNs go out at 0, 1, 3, 7 s...
	synRTO = time.Second
)

// kernelRetransmitTimes returns when (after the send) the kernel sends the
// first n retransmissions of a segment nobody acknowledges: the tail-loss
// probe at +0.20 s, the first RTO 0.20 s later, then doubling from
// kernelRTO, each step capped at two minutes.
func kernelRetransmitTimes(n int) []time.Duration {
	out := make([]time.Duration, 0, n)
	t := time.Duration(0)
	step := kernelTLP
	for i := 0; i < n; i++ {
		switch i {
		case 0:
			step = kernelTLP
		case 1:
			step = kernelRTOMin
		case 2:
			step = 2 * kernelRTO
		default:
			step = min(2*step, kernelRTOMax)
		}
		t += step
		out = append(out, t)
	}
	return out
}

// retries2Boundary is the kernel's tcp_model_timeout for tcp_retries2=n:
// the time the RTOs would take with a 200 ms base, doubling up to 120 s
// (n = 15 gives 924.6 s).
func retries2Boundary(n int) time.Duration {
	const thresh = 9 // ilog2(TCP_RTO_MAX / TCP_RTO_MIN)
	if n <= thresh {
		return time.Duration((2<<n)-1) * kernelRTOMin
	}
	return time.Duration((2<<thresh)-1)*kernelRTOMin + time.Duration(n-thresh)*kernelRTOMax
}

// kernelDataTimeout predicts a request sent into a dead link on a kernel
// socket: when send's data times out (ETIMEDOUT), and how many
// retransmissions go out before. With a user timeout u > 0 the connection
// dies u after the first RTO retransmission; otherwise at the first RTO
// whose time since the first RTO retransmission reaches the tcp_retries2
// boundary (the kernel checks only when an RTO fires, so neighbouring
// values of retries2 can give the same time).
func kernelDataTimeout(retries2 int, u time.Duration) (at time.Duration, retransmits int) {
	at, retransmits, _ = kernelDataTimeoutRange(retries2, u)
	return at, retransmits
}

// boundaryMargin is how close (relative) the retry limit may come to a
// timer firing before that firing counts as a possible end too.
const boundaryMargin = 0.1

// kernelDataTimeoutRange is kernelDataTimeout plus the earliest time the
// timeout may come at: the firing before the predicted one when the retry
// limit falls within boundaryMargin of it (0 when it does not).
func kernelDataTimeoutRange(retries2 int, u time.Duration) (at time.Duration, retransmits int, earliest time.Duration) {
	times := kernelRetransmitTimes(64)
	first := times[1]
	if u > 0 {
		at = first + u
		for _, t := range times {
			if t < at {
				retransmits++
			}
		}
		return at, retransmits, 0
	}
	boundary := retries2Boundary(retries2)
	for k := 2; k < len(times); k++ {
		if times[k]-first >= boundary {
			if gap := boundary - (times[k-1] - first); float64(gap) < boundaryMargin*float64(boundary) {
				earliest = times[k-1]
			}
			return times[k], k, earliest
		}
	}
	return times[len(times)-1], len(times) - 1, 0
}

// kernelRecovery predicts a request sent into an outage of length d: it
// gets through with the first retransmission at or after d. It returns
// that retransmission's time and number (1 = the tail-loss probe).
func kernelRecovery(d time.Duration) (at time.Duration, n int) {
	for i, t := range kernelRetransmitTimes(64) {
		if t >= d {
			return t, i + 1
		}
	}
	return 0, 0
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
func synBoundary(n int) time.Duration {
	const thresh = 6 // ilog2(TCP_RTO_MAX / TCP_TIMEOUT_INIT)
	if n <= thresh {
		return time.Duration((2<<n)-1) * synRTO
	}
	return time.Duration((2<<thresh)-1)*synRTO + time.Duration(n-thresh)*kernelRTOMax
}

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
// out at 1, 2, 4 … 64, 128, 248 … s (steps capped at 120 s).
const (
	gvisorInitialRTO = time.Second
	gvisorRTOMax     = 120 * time.Second
)

// gvisorRetransmitTimes returns when gVisor retransmits an unacknowledged
// segment, after the send.
func gvisorRetransmitTimes(n int) []time.Duration {
	out := make([]time.Duration, 0, n)
	t := gvisorInitialRTO
	for i := 0; i < n; i++ {
		out = append(out, t)
		t += min(t, gvisorRTOMax)
	}
	return out
}

// gvisorDataTimeout predicts a gVisor client's send into a dead link: with a
// user timeout u it gives up u after the send (the timeout counts from the
// segment's first transmission and the RTO is capped to what remains);
// otherwise after maxRetries retransmissions, when the next RTO fires.
func gvisorDataTimeout(maxRetries int, u time.Duration) (at time.Duration, retransmits int) {
	times := gvisorRetransmitTimes(maxRetries + 1)
	if u > 0 {
		for _, t := range gvisorRetransmitTimes(64) {
			if t < u {
				retransmits++
			}
		}
		return u, retransmits
	}
	return times[maxRetries], maxRetries
}

// gvisorRecovery is kernelRecovery for a gVisor client.
func gvisorRecovery(d time.Duration) (at time.Duration, n int) {
	for i, t := range gvisorRetransmitTimes(64) {
		if t >= d {
			return t, i + 1
		}
	}
	return 0, 0
}

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
