package main

import (
	"os"
	"testing"

	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/refs"

	"github.com/unplug-dev/unplug/bench"
	"github.com/unplug-dev/unplug/tun"
)

// TestMain lets the test binary serve as the namespace agent that
// tun.NewNamespace re-executes (and as the bench's upstream servers, were a
// test to run the forwarding rows in-process); fails the package if a goroutine outlives
// the tests (serve's control server, the peer's link loops, services) or
// if a gVisor packet buffer or endpoint of an in-process serve was never
// released; and removes the unplug binary the tests built.
func TestMain(m *testing.M) {
	tun.RunAgentIfRequested()
	bench.RunUpstreamsIfRequested()
	refs.SetLeakMode(refs.LeaksPanic)
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		removeBuiltBinary()
		if code == 0 {
			refs.DoLeakCheck() // panics, naming the leaked objects
		}
		os.Exit(code)
	}))
}
