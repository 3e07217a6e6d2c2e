package scenarios

import (
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The model's boundaries and SYN schedule must reproduce FACTS.md (the
// data timers are checked by TestPreciseKernelModel).
func TestKernelModelMatchesFacts(t *testing.T) {
	// "tcp_retries2 15: model boundary 924.6 s (tcp_model_timeout, 200 ms
	// base, 120 s cap)".
	if got := retries2Boundary(15); got != 924600*time.Millisecond {
		t.Errorf("retries2Boundary(15) = %s, FACTS 924.6 s", got)
	}
	if got := retries2Boundary(3); got != 3*time.Second {
		t.Errorf("retries2Boundary(3) = %s, want 3 s", got)
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

// The timer wheel rounds a timer's expiry up to its level's granularity,
// by at least one jiffy (kernel/time/timer.c calc_index).
func TestWheelFire(t *testing.T) {
	tests := []struct {
		at, delta, want int64
	}{
		{0, 51, 52},       // level 0: +1 jiffy (a 204 ms RTO fires after 208 ms)
		{8, 62, 71},       // still level 0
		{0, 63, 64},       // level 1 (63…503): 8-jiffy buckets
		{8, 102, 112},     // RTO #2 from an aligned jiffy
		{3, 102, 112},     // … from an unaligned one
		{16, 408, 432},    // 408 + 8, rounded to 8
		{0, 504, 512},     // level 2: 64-jiffy buckets
		{64, 816, 896},    // RTO #5 (3.26 s) from an aligned jiffy
		{0, 30000, 30208}, // a 120 s RTO: level 3, 512-jiffy buckets
	}
	for _, tt := range tests {
		if got := wheelFire(tt.at, tt.delta); got != tt.want {
			t.Errorf("wheelFire(%d, %d) = %d, want %d", tt.at, tt.delta, got, tt.want)
		}
	}
}

// The precise model must reproduce FACTS.md's measurements (HZ=250, a
// sub-millisecond RTT: RTO 204 ms) and the boundary it describes: with
// tcp_retries2=3 a 204 ms RTO survives to RTO #5 (≈ 6.7 s), a 212 ms one
// ends at RTO #4 (≈ 3.5 s); 4 ends at RTO #5 either way.
func TestPreciseKernelModel(t *testing.T) {
	fast := Conditions{Kernel: true, HZ: 250, RTT: 500 * time.Microsecond, RTO: 204 * time.Millisecond, Measured: true}
	slow := fast
	slow.RTT, slow.RTO = 11*time.Millisecond, 212*time.Millisecond
	tests := []struct {
		name     string
		c        Conditions
		retries2 int
		u        time.Duration
		wantRTO  int     // the firing that ends it
		fact     string  // FACTS' measured time, s, as precise as FACTS gives it
		width    float64 // the model's range may be this wide, s
	}{
		{"retries2=1", fast, 1, 0, 3, "1.66", 0.06},
		{"retries2=2", fast, 2, 0, 4, "3.3", 0.06},
		{"retries2=3 fast", fast, 3, 0, 5, "6.7", 0.3},
		{"retries2=3 slow", slow, 3, 0, 4, "3.5", 0.06},
		{"retries2=4 fast", fast, 4, 0, 5, "6.7", 0.3},
		{"retries2=4 slow", slow, 4, 0, 5, "6.9", 0.3},
		{"retries2=5", fast, 5, 0, 6, "13.3", 0.3},
		{"retries2=15", fast, 15, 0, 16, "939", 2.1}, // FACTS: ≈ 939 s
		{"user timeout 100ms", fast, 15, 100 * time.Millisecond, 2, "0.51", 0.03},
		{"user timeout 1s", fast, 15, time.Second, 3, "1.42", 0.06},
		{"user timeout 5s", fast, 15, 5 * time.Second, 5, "5.65", 0.3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := planData(tt.c, 1, tt.retries2, tt.u)
			if len(p.Ends) != 1 {
				t.Fatalf("ends %+v, want one", p.Ends)
			}
			e := p.Ends[0]
			if e.N != tt.wantRTO || e.Firing != tt.wantRTO {
				t.Errorf("ends at RTO #%d after %d retransmissions, want RTO #%d", e.N, e.Firing, tt.wantRTO)
			}
			fact, _ := strconv.ParseFloat(tt.fact, 64)
			half := 0.5 // half a unit of FACTS' last digit
			if i := strings.IndexByte(tt.fact, '.'); i >= 0 {
				half = 0.5 * math.Pow(10, -float64(len(tt.fact)-i-1))
			}
			half = max(half, 0.01) // FACTS' values are "≈"
			if e.Lo.Seconds() > fact+half || e.Hi.Seconds() < fact-half || (e.Hi-e.Lo).Seconds() > tt.width {
				t.Errorf("ends %s – %s, FACTS %s s (range at most %.2f s wide)", e.Lo, e.Hi, tt.fact, tt.width)
			}
		})
	}
	// On the boundary itself the model gives both firings with odds: a
	// 208 ms RTO (RTT ≈ 4–8 ms) with tcp_retries2=3.
	mid := fast
	mid.RTO = 208 * time.Millisecond
	p := planData(mid, 1, 3, 0)
	if len(p.Ends) != 2 || p.Ends[0].Odds+p.Ends[1].Odds < 0.999 {
		t.Errorf("208 ms, retries2=3: ends %+v, want RTO #4 and #5 with odds", p.Ends)
	}
	// FACTS: retransmissions at +0.206, 0.415, 0.847, 1.677, 3.339 s.
	for i, want := range []float64{0.206, 0.415, 0.847, 1.677, 3.339} {
		f := planData(fast, 1, 15, 0).Retrans[i]
		if want < f.Lo.Seconds()-0.002 || want > f.Hi.Seconds()+0.002 {
			t.Errorf("%s at %.3f s, model %s – %s", firingName(f), want, f.Lo, f.Hi)
		}
	}
}

// FACTS: keepalive 1/1/3: probes ≈ 1.024 s apart, ETIMEDOUT 4.08–4.10 s
// after the last packet received.
func TestKeepaliveModel(t *testing.T) {
	probes, end := kernelClock{hz: 250}.keepaliveEnd(time.Second, time.Second, 3)
	if len(probes) != 3 || probes[1].Lo-probes[0].Lo < time.Second {
		t.Fatalf("probes %+v", probes)
	}
	if end.Lo.Seconds() > 4.08 || end.Hi.Seconds() < 4.10 || end.Lo.Seconds() < 4.0 || end.Hi.Seconds() > 4.15 {
		t.Errorf("end %s – %s, FACTS 4.08–4.10 s", end.Lo, end.Hi)
	}
}

// gVisor's sender, as measured on the virtual clock: no RTT sample gives
// 1, 2, 4 … 968 s and ErrTimeout at 1088 s (FACTS); a 20 ms link (SRTT 40
// ms, RTO 200 ms) gives the probe at 280 ms, RTOs 200, 400, 800 ms.
func TestGVisorPreciseModel(t *testing.T) {
	p := planData(Conditions{RTO: time.Second, Virtual: true}, 1, 15, 0)
	if len(p.Retrans) != 15 || p.Retrans[14].Lo != 968*time.Second || p.Ends[0].Lo != 1088*time.Second {
		t.Errorf("no RTT sample: %d retransmissions, last %s, end %s", len(p.Retrans), p.Retrans[len(p.Retrans)-1].Lo, p.Ends[0].Lo)
	}
	p = planData(Conditions{RTT: 40 * time.Millisecond, RTO: 200 * time.Millisecond, Virtual: true}, 1, 4, 0)
	want := []time.Duration{280, 480, 880, 1680}
	for i, w := range want {
		if p.Retrans[i].Lo != w*time.Millisecond {
			t.Errorf("retransmission %d at %s, want %dms", i+1, p.Retrans[i].Lo, w)
		}
	}
	if p.Ends[0].Lo != 3280*time.Millisecond {
		t.Errorf("end %s, want 3.28 s", p.Ends[0].Lo)
	}
}
