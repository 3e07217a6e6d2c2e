package sockdiag

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/unplug-dev/unplug/tun"
)

func TestMain(m *testing.M) {
	// Namespace tests re-execute this binary as the namespace agent and as
	// the socket-holding program (runHelperIfRequested).
	tun.RunAgentIfRequested()
	runHelperIfRequested()
	goleak.VerifyTestMain(m)
}
