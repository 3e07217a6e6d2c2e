package scenarios

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/unplug-dev/unplug/tun/tuntest"
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
		runStage(t, "rootless", "", &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}},
			Pdeathsig:  syscall.SIGKILL,
		})
	default:
		// Not parallel: packets are timestamped when the peer reads them
		// from the TUN, and a crowded machine (the race detector, many
		// namespaces at once) skews the intervals the ratios come from.
		requireNamespaces(t)
		_, exe := tuntest.CopyTestBinary(t, "scenarios.test")
		runStage(t, "mountns", exe, &syscall.SysProcAttr{
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

// runStage re-executes the test binary (exe, or this one) as the next
// stage of TestRootless in the directory of the binary.
func runStage(t *testing.T, stage, exe string, attr *syscall.SysProcAttr) {
	t.Helper()
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(exe, "-test.run=^TestRootless$", "-test.v", "-test.count=1")
	cmd.Dir = filepath.Dir(exe)
	cmd.Env = append(os.Environ(), stageEnv+"="+stage)
	cmd.SysProcAttr = attr
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("stage %s: %v\n%s", stage, err, out)
	}
	t.Logf("stage %s:\n%s", stage, out)
}
