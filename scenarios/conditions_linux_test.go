package scenarios

import (
	"testing"
	"time"
)

// TestNominalKernelRTOMeasured: the RTO the theory assumes before a run
// (and when the client socket could not be read) is the kernel's own for
// the TUN link: tcpi_rto of a kernel client after its handshake over the
// TUN, 200 ms + one jiffy (204 ms at HZ 250), not TCP_RTO_MIN's 200 ms.
func TestNominalKernelRTOMeasured(t *testing.T) {
	for _, tc := range []struct {
		hz   int
		rtt  time.Duration
		want time.Duration
	}{
		{250, tunRTT, 204 * time.Millisecond},
		{1000, tunRTT, 201 * time.Millisecond},
		{100, tunRTT, 210 * time.Millisecond},
		{250, 0, 200 * time.Millisecond},
		{250, 10 * time.Millisecond, 212 * time.Millisecond},
	} {
		if got := kernelRTO(tc.hz, tc.rtt); got != tc.want {
			t.Errorf("kernelRTO(HZ %d, RTT %v) = %v, want %v", tc.hz, tc.rtt, got, tc.want)
		}
	}
	requireNamespaces(t)
	rep := runReal(t, "brief-outage", map[string]string{"outage": "300ms"}, Options{Seed: 1})
	ci := rep.ClientInfo
	if ci == nil || ci.RTO == 0 {
		t.Fatalf("no client socket reading: %+v", ci)
	}
	n := nominalConditions(true)
	if ci.HZ != n.hz() || ci.RTO != n.RTO {
		t.Errorf("measured tcpi_rto %v at HZ %d; nominal conditions assume %v at HZ %d", ci.RTO, ci.HZ, n.RTO, n.hz())
	}
	if j := (kernelClock{hz: n.hz()}).jiffy(); ci.RTT >= j || n.RTT >= j {
		t.Errorf("measured tcpi_rtt %v, nominal %v: both should be below one jiffy (%v)", ci.RTT, n.RTT, j)
	}
}
