package scenarios

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/unplug-dev/unplug/tun"
)

// TestMain lets the test binary serve as the namespace agent that
// tun.NewNamespace re-executes, and checks that no goroutine outlives the
// tests.
func TestMain(m *testing.M) {
	tun.RunAgentIfRequested()
	goleak.VerifyTestMain(m)
}
