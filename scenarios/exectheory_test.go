package scenarios

import (
	"strings"
	"testing"
	"time"
)

// TestInFlightTimeoutFacts checks the retries2 and user-timeout model
// against the ETIMEDOUT times FACTS.md measured (200 ms RTO, HZ=250).
func TestInFlightTimeoutFacts(t *testing.T) {
	for _, tc := range []struct {
		name     string
		s        TimeoutSettings
		measured time.Duration
		by       string
	}{
		{"retries2=1", TimeoutSettings{Retries2: 1}, 1660 * time.Millisecond, "tcp_retries2"},
		{"retries2=2", TimeoutSettings{Retries2: 2}, 3300 * time.Millisecond, "tcp_retries2"},
		{"retries2=3", TimeoutSettings{Retries2: 3}, 6700 * time.Millisecond, "tcp_retries2"},
		{"retries2=4", TimeoutSettings{Retries2: 4}, 6700 * time.Millisecond, "tcp_retries2"},
		{"retries2=5", TimeoutSettings{Retries2: 5}, 13300 * time.Millisecond, "tcp_retries2"},
		{"retries2=6", TimeoutSettings{Retries2: 6}, 26300 * time.Millisecond, "tcp_retries2"},
		{"retries2=15", TimeoutSettings{Retries2: 15}, 939 * time.Second, "tcp_retries2"},
		{"user timeout 100ms", TimeoutSettings{Retries2: 15, UserTimeout: 100 * time.Millisecond}, 510 * time.Millisecond, "TCP_USER_TIMEOUT"},
		{"user timeout 1s", TimeoutSettings{Retries2: 15, UserTimeout: time.Second}, 1420 * time.Millisecond, "TCP_USER_TIMEOUT"},
		{"user timeout 5s", TimeoutSettings{Retries2: 15, UserTimeout: 5 * time.Second}, 5650 * time.Millisecond, "TCP_USER_TIMEOUT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			est, by := InFlightTimeout(tc.s)
			if by != tc.by {
				t.Errorf("ended by %q, want %q", by, tc.by)
			}
			if tc.measured < est.Min || tc.measured > est.Max {
				t.Errorf("model %v does not contain the measured %v", est, tc.measured)
			}
		})
	}
}

// TestInFlightTimeoutOwnRTO checks that the socket's own RTO and RTT (from
// sock_diag) decide the ending firing at tcp_retries2=3, which sits on a
// boundary (FACTS): with a 204 ms RTO (RTT < 1 ms) RTO #4 is short of
// 3.000 s after RTO #1 and RTO #5 ends it at ≈ 6.7 s; with 212 ms (RTT ≳ 10
// ms) RTO #4 ends it at ≈ 3.5 s.
func TestInFlightTimeoutOwnRTO(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rto, rtt time.Duration
		measured []time.Duration
		theory   string
	}{
		{"rto 204ms", 204 * time.Millisecond, 500 * time.Microsecond, []time.Duration{6700 * time.Millisecond}, "RTO #5"},
		{"rto 212ms", 212 * time.Millisecond, 12 * time.Millisecond, []time.Duration{3500 * time.Millisecond}, "RTO #4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := TimeoutSettings{Retries2: 3, RTO: tc.rto, RTT: tc.rtt}
			est, _ := InFlightTimeout(s)
			for _, m := range tc.measured {
				if m < est.Min || m > est.Max {
					t.Errorf("model %v does not contain the measured %v", est, m)
				}
			}
			// The other RTO's answer must fall outside: the range can fail.
			other := map[string]time.Duration{"RTO #5": 3500 * time.Millisecond, "RTO #4": 6700 * time.Millisecond}[tc.theory]
			if other >= est.Min && other <= est.Max {
				t.Errorf("model %v also contains %v, the other RTO's answer", est, other)
			}
			if got := TheoryText(s); !strings.Contains(got, "(tcp_retries2: "+tc.theory+")") {
				t.Errorf("theory %q does not name %s as the ending firing", got, tc.theory)
			}
		})
	}
}

// TestIdleTimeoutFacts checks the keepalive model: 1/1/3 → 4.08–4.10 s.
func TestIdleTimeoutFacts(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    TimeoutSettings
		want time.Duration // measured or exact
		by   string
		ok   bool
	}{
		{"no keepalive", TimeoutSettings{Retries2: 15}, 0, "", false},
		{"keepalive 1/1/3", TimeoutSettings{KeepAlive: true, KeepIdle: time.Second, KeepIntvl: time.Second, KeepCnt: 3}, 4090 * time.Millisecond, "keepalive", true},
		{"keepalive defaults", TimeoutSettings{KeepAlive: true, KeepIdle: 7200 * time.Second, KeepIntvl: 75 * time.Second, KeepCnt: 9}, 7875 * time.Second, "keepalive", true},
		{"keepalive + user timeout", TimeoutSettings{KeepAlive: true, KeepIdle: time.Second, KeepIntvl: time.Second, KeepCnt: 9, UserTimeout: 3 * time.Second}, 3 * time.Second, "keepalive + TCP_USER_TIMEOUT", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			est, by, ok := IdleTimeout(tc.s)
			if ok != tc.ok || by != tc.by {
				t.Fatalf("IdleTimeout = %v, %q, %v; want by %q ok %v", est, by, ok, tc.by, tc.ok)
			}
			if ok && (tc.want < est.Min || tc.want > est.Max) {
				t.Errorf("model %v does not contain %v", est, tc.want)
			}
		})
	}
}

// TestTheoryText checks the sentence the report prints for the kernel's
// defaults.
func TestTheoryText(t *testing.T) {
	got := TheoryText(TimeoutSettings{Retries2: 15, KeepIdle: 7200 * time.Second, KeepIntvl: 75 * time.Second, KeepCnt: 9})
	for _, want := range []string{"no keepalive", "no TCP_USER_TIMEOUT", "tcp_retries2=15", "a request in flight would wait ≈ 93", "an idle pooled connection would never notice"} {
		if !strings.Contains(got, want) {
			t.Errorf("theory %q lacks %q", got, want)
		}
	}
}
