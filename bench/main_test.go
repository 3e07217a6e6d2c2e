package bench

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/unplug-dev/unplug/tun"
)

// TestMain lets tun.NewNamespace re-execute this binary as its agent, and
// the forwarding rows as their upstream servers, and checks that no
// goroutine outlives the tests.
func TestMain(m *testing.M) {
	tun.RunAgentIfRequested()
	RunUpstreamsIfRequested()
	goleak.VerifyTestMain(m)
}
