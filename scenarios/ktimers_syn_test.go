package scenarios

import (
	"testing"
	"time"
)

// TestPredictSynMeasured: the SYN timer model against connect() into a
// dead link (iptables DROP on a namespace's loopback) measured on Linux
// 6.18, HZ 250, from the connect call to ETIMEDOUT: tcp_syn_retries (or
// TCP_SYNCNT) against tcp_model_timeout from a 1 s base, the linear
// timeouts moving only the firings, TCP_USER_TIMEOUT replacing the limit
// and clamping the timer (it never ends the first firing: the kernel
// needs a retransmission first).
func TestPredictSynMeasured(t *testing.T) {
	k := kernelClock{hz: 250}
	for _, tc := range []struct {
		name            string
		retries, linear int
		u               time.Duration
		measured        time.Duration
		retransmits     int
	}{
		{"syncnt 2, linear 4", 2, 4, 0, 7114 * time.Millisecond, 5},
		{"syncnt 1, linear 4", 1, 4, 0, 3090 * time.Millisecond, 2},
		{"syncnt 3, linear 0", 3, 0, 0, 15388 * time.Millisecond, 3},
		{"user timeout 2.5 s", 6, 4, 2500 * time.Millisecond, 2525 * time.Millisecond, 2},
		{"user timeout 3.5 s", 6, 4, 3500 * time.Millisecond, 3536 * time.Millisecond, 3},
		{"user timeout 6.2 s over syncnt 1", 1, 4, 6200 * time.Millisecond, 6225 * time.Millisecond, 5},
		{"user timeout 0.5 s", 6, 4, 500 * time.Millisecond, 1034 * time.Millisecond, 1},
		{"user timeout 1 s", 6, 4, time.Second, 1051 * time.Millisecond, 1},
		// Linux 6.18's defaults: SYNs at 1, 2, 3, 4, 5, 7, 11, 19, 35, 67 s
		// nominally, ETIMEDOUT at the firing due at 131 s: the timer
		// wheel's coarse levels (the 64 s step rounds up to 2.048 s) make
		// it 134 s, not the 131 s ip-sysctl.rst sums.
		{"defaults: 6 retries, linear 4", 6, 4, 0, 134421 * time.Millisecond, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := k.predictSyn(tc.retries, tc.linear, tc.u)
			// The measurement is user space's, around the syscall: allow
			// the model's tolerance of a kernel client.
			tol := 2*k.jiffy() + time.Millisecond
			if tc.measured < p.End.Lo-tol || tc.measured > p.End.Hi+tol {
				t.Errorf("ETIMEDOUT measured at %v, model %v – %v", tc.measured, p.End.Lo, p.End.Hi)
			}
			if tc.retransmits < p.MinRetx || tc.retransmits > p.MaxRetx {
				t.Errorf("%d SYN retransmissions measured, model %d – %d", tc.retransmits, p.MinRetx, p.MaxRetx)
			}
		})
	}
}
