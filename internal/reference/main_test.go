package reference

import (
	"testing"

	"github.com/unplug-dev/unplug/tun"
)

// TestMain lets the test binary serve as the namespace agent that
// scenarios.Run re-executes (tun.NewNamespace).
func TestMain(m *testing.M) {
	tun.RunAgentIfRequested()
	m.Run()
}
