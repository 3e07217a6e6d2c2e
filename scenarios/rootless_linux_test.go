package scenarios

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
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
		mountTunNode(t)
		runStage(t, "rootless", "", &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}},
			Pdeathsig:  syscall.SIGKILL,
		})
	default:
		// Not parallel: packets are timestamped when the peer reads them
		// from the TUN, and a crowded machine (the race detector, many
		// namespaces at once) skews the intervals the ratios come from.
		requireNamespaces(t)
		exe := copyTestBinary(t)
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

// mountTunNode makes this private mount namespace's /dev/net/tun a fresh
// node, mode 0666, on a tmpfs in the working directory.
func mountTunNode(t *testing.T) {
	must := func(what string, err error) {
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	must("make mounts private", unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""))
	dir, err := filepath.Abs("dev")
	must("abs", err)
	must("mkdir", os.Mkdir(dir, 0o755))
	must("mount tmpfs", unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755"))
	node := filepath.Join(dir, "tun")
	must("mknod", unix.Mknod(node, unix.S_IFCHR|0o600, int(unix.Mkdev(10, 200))))
	must("chmod our own node", os.Chmod(node, 0o666))
	must("bind over /dev/net/tun", unix.Mount(node, "/dev/net/tun", "", unix.MS_BIND, ""))
}

// copyTestBinary copies this test binary into a directory uid 65534 may
// enter (go test's build directory is private to root).
func copyTestBinary(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "unplug-scenarios-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	exe := filepath.Join(dir, "scenarios.test")
	dst, err := os.OpenFile(exe, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return exe
}
