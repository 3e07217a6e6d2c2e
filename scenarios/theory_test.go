package scenarios

import (
	"math"
	"testing"
	"time"
)

// within reports whether got is within frac of want.
func within(got, want time.Duration, frac float64) bool {
	return math.Abs(float64(got-want)) <= frac*float64(want)
}

// The models must reproduce FACTS.md's measurements.
func TestKernelModelMatchesFacts(t *testing.T) {
	// "Retransmission times after a send: +0.20 s (tail-loss probe),
	// +0.20, +0.41, +0.83, +1.63, +3.33, +6.65 s".
	intervals := []float64{0.20, 0.20, 0.41, 0.83, 1.63, 3.33, 6.65}
	times := kernelRetransmitTimes(len(intervals))
	prev := time.Duration(0)
	for i, want := range intervals {
		got := times[i] - prev
		if !within(got, time.Duration(want*float64(time.Second)), 0.03) {
			t.Errorf("interval %d = %s, FACTS %.2f s", i+1, got, want)
		}
		prev = times[i]
	}
	// "ETIMEDOUT with tcp_retries2=N: N=1 1.66 s, 2 3.3 s, 3 and 4 6.7 s,
	// 5 13.3 s, 6 26.3 s."
	for n, want := range map[int]float64{1: 1.66, 2: 3.3, 3: 6.7, 4: 6.7, 5: 13.3, 6: 26.3} {
		got, _ := kernelDataTimeout(n, 0)
		if !within(got, time.Duration(want*float64(time.Second)), 0.03) {
			t.Errorf("retries2=%d: ETIMEDOUT at %s, FACTS %.2f s", n, got, want)
		}
	}
	// "tcp_retries2 15 ≈ 924.6 s before ETIMEDOUT (computed from a 200 ms
	// base, capped at 120 s per step)".
	if got := retries2Boundary(15); got != 924600*time.Millisecond {
		t.Errorf("retries2Boundary(15) = %s, FACTS 924.6 s", got)
	}
	if got, _ := kernelDataTimeout(15, 0); got < 924600*time.Millisecond || got > 1100*time.Second {
		t.Errorf("retries2=15: ETIMEDOUT at %s, want just after 924.6 s", got)
	}
	// "ETIMEDOUT with TCP_USER_TIMEOUT=U: ≈ U + 0.41 s (100 ms → 0.51 s,
	// 1 s → 1.42 s, 5 s → 5.65 s)".
	for u, want := range map[time.Duration]float64{100 * time.Millisecond: 0.51, time.Second: 1.42, 5 * time.Second: 5.65} {
		got, _ := kernelDataTimeout(3, u)
		if math.Abs(got.Seconds()-want) > 0.3 {
			t.Errorf("user timeout %s: ETIMEDOUT at %s, FACTS %.2f s", u, got, want)
		}
	}
	// "Outage of D seconds during a request: the reply arrives at the
	// first retransmission after the link is back (1.5 s outage → 1.66 s;
	// 3 s → 3.28 s)."
	for d, want := range map[time.Duration]float64{1500 * time.Millisecond: 1.66, 3 * time.Second: 3.28} {
		got, _ := kernelRecovery(d)
		if !within(got, time.Duration(want*float64(time.Second)), 0.03) {
			t.Errorf("outage %s: recovery at %s, FACTS %.2f s", d, got, want)
		}
	}
	// "tcp_syn_retries 6: connect() fails with ETIMEDOUT after ≈ 127 s";
	// "SYN retransmits at 1, 2, 4, 8 … s" (the classic backoff).
	if got, n := synTimeout(6, 0); got != 127*time.Second || n != 6 {
		t.Errorf("synTimeout(6) = %s after %d SYNs, FACTS 127 s", got, n)
	}
	fires := synFires(0, 4)
	for i, want := range []time.Duration{1, 3, 7, 15} {
		if fires[i] != want*time.Second {
			t.Errorf("SYN %d at %s, want %ds", i+1, fires[i], want)
		}
	}
}

// Linux's ip-sysctl.rst: with tcp_syn_linear_timeouts = 4 the SYN RTOs
// are 1, 1, 1, 1, 1, 2, 4…; measured with tcp_syn_retries 2: five SYN
// retransmissions, ETIMEDOUT at ≈ 7.1 s.
func TestSynLinearTimeouts(t *testing.T) {
	fires := synFires(4, 7)
	for i, want := range []time.Duration{1, 2, 3, 4, 5, 7, 11} {
		if fires[i] != want*time.Second {
			t.Errorf("linear=4: timer %d at %s, want %ds", i+1, fires[i], want)
		}
	}
	if at, n := synTimeout(2, 4); at != 7*time.Second || n != 5 {
		t.Errorf("synTimeout(2, linear 4) = %s after %d SYNs, measured 7.1 s after 5", at, n)
	}
	if at, n, ok := synRecovery(3, 0, 2*time.Second); !ok || at != 3*time.Second || n != 2 {
		t.Errorf("synRecovery(3, 0, 2s) = %s, %d, %v; want connected at 3 s with the 2nd retransmission", at, n, ok)
	}
	if _, _, ok := synRecovery(2, 0, 30*time.Second); ok {
		t.Error("an outage longer than the SYN timeout recovered")
	}
}

// FACTS: gVisor's sender, with everything dropped, "gives up after 1 + 15
// transmissions at virtual 0, 1, 2, 4, … 64, 128, 248, … 968 s and the
// endpoint reports ErrTimeout at ≈ 1088 s".
func TestGVisorModelMatchesFacts(t *testing.T) {
	times := gvisorRetransmitTimes(15)
	want := []int{1, 2, 4, 8, 16, 32, 64, 128, 248, 368, 488, 608, 728, 848, 968}
	for i, w := range want {
		if times[i] != time.Duration(w)*time.Second {
			t.Errorf("gVisor retransmission %d at %s, FACTS %d s", i+1, times[i], w)
		}
	}
	if at, n := gvisorDataTimeout(15, 0); at != 1088*time.Second || n != 15 {
		t.Errorf("gvisorDataTimeout(15) = %s after %d, FACTS 1088 s after 15", at, n)
	}
}

func TestPersistTimes(t *testing.T) {
	got := persistTimes(3 * time.Second)
	want := []time.Duration{200, 600, 1400, 3000}
	if len(got) != len(want) {
		t.Fatalf("persistTimes(3s) = %v", got)
	}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Errorf("probe %d at %s, want %dms", i+1, got[i], want[i])
		}
	}
}
