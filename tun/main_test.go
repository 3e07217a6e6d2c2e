package tun

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Namespace tests re-execute this binary as the agent.
	RunAgentIfRequested()
	goleak.VerifyTestMain(m)
}
