package scenarios

import (
	"os"
	"syscall"
	"testing"

	"github.com/unplug-dev/unplug/internal/tuntest"
)

// nobody is the unprivileged user the rootless test runs as.
const nobody = 65534

// stageEnv tells a re-executed test binary which stage it is.
const stageEnv = "UNPLUG_SCENARIOS_TEST_STAGE"

// TestRootless runs timeout, brief-outage and keepalive as an unprivileged
// user, as `unplug run` works for anyone who may create a user namespace
// and open /dev/net/tun. Three processes:
//
//  1. the test (root) copies the test binary where uid 65534 can run it;
//  2. a root process in private mount and network namespaces mounts its
//     own accessible /dev/net/tun node over the real one (the host's is
//     never changed);
//  3. the scenarios, as uid 65534.
func TestRootless(t *testing.T) {
	switch os.Getenv(stageEnv) {
	case "rootless":
		runRootless(t)
	case "mountns":
		tuntest.MountTunNode(t, 0o666)
		tuntest.RunStage(t, stageEnv, "rootless", "", "", &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}},
			Pdeathsig:  syscall.SIGKILL,
		})
	default:
		// Not parallel: packets are timestamped when the peer reads them
		// from the TUN, and a crowded machine (the race detector, many
		// namespaces at once) skews the intervals the ratios come from.
		requireNamespaces(t)
		_, exe := tuntest.CopyTestBinary(t, "scenarios.test")
		tuntest.RunStage(t, stageEnv, "mountns", exe, "", &syscall.SysProcAttr{
			Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWNET,
			Pdeathsig:  syscall.SIGKILL,
		})
	}
}

func runRootless(t *testing.T) {
	if os.Geteuid() != nobody {
		t.Fatalf("euid %d, want %d", os.Geteuid(), nobody)
	}
	for _, tc := range []struct {
		name   string
		params map[string]string
	}{
		{"timeout", map[string]string{"retries2": "2"}},
		{"brief-outage", map[string]string{"outage": "1s"}},
		{"keepalive", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkRealReport(t, runReal(t, tc.name, tc.params, Options{}), nil)
		})
	}
}
