package stack

import (
	"os"
	"testing"

	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/refs"

	"github.com/unplug-dev/unplug/tun"
)

// TestMain fails the package if a goroutine outlives the tests (the link's
// read and write loops, gVisor's processors, the services) or if a gVisor
// reference-counted object (a packet buffer the link, the fault layer's
// delay queue or a service held) was never released.
func TestMain(m *testing.M) {
	tun.RunAgentIfRequested() // tun.NewNamespace re-executes this binary as its agent
	refs.SetLeakMode(refs.LeaksPanic)
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if code == 0 {
			refs.DoLeakCheck() // panics, naming the leaked objects
		}
		os.Exit(code)
	}))
}
