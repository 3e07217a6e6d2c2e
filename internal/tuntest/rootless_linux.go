// Package tuntest holds what tests of unplug's packages share to run
// rootless: a TUN node an unprivileged user may open, made inside the
// test's own private mount namespace (the host's /dev/net/tun is 0600 on
// these build machines and is never changed), and a copy of the test
// binary in a directory uid 65534 may enter.
package tuntest

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tunPath is the TUN clone device.
const tunPath = "/dev/net/tun"

// MountTunNode makes /dev/net/tun, in the calling process's mount
// namespace (which must be a private one the test made, e.g. with
// CLONE_NEWNS), a fresh node with the given mode on a tmpfs under the
// working directory. Mounts are made private first, so nothing propagates
// to the host.
func MountTunNode(t testing.TB, mode os.FileMode) {
	t.Helper()
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
	must("chmod own node", os.Chmod(node, mode))
	must("bind over "+tunPath, unix.Mount(node, tunPath, "", unix.MS_BIND, ""))
}

// CopyTestBinary copies the running test binary, as name, into a fresh
// directory (mode 0755) that uid 65534 may enter — go test's build
// directory is private to root — and returns both; the test's cleanup
// removes them.
func CopyTestBinary(t testing.TB, name string) (dir, exe string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "unplug-test-")
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
	exe = filepath.Join(dir, name)
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
	return dir, exe
}

// RunStage re-executes the test binary exe ("" means the running one) to
// run only the current test, with env=stage in its environment telling it
// which stage of a multi-process test it is, attr deciding its namespaces
// and credentials, and dir its working directory ("" means exe's
// directory). It fails unless that run passed.
func RunStage(t testing.TB, env, stage, exe, dir string, attr *syscall.SysProcAttr) {
	t.Helper()
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			t.Fatal(err)
		}
	}
	if dir == "" {
		dir = filepath.Dir(exe)
	}
	ctx, cancel := context.WithTimeout(context.Background(), stageTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	// Race-enabled binaries sleep a second at exit unless told otherwise.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(os.Environ(), env+"="+stage, "GORACE="+gorace)
	cmd.Dir = dir
	cmd.SysProcAttr = attr
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("stage %s: %v\n%s", stage, err, out)
	}
	t.Logf("stage %s:\n%s", stage, out)
}

// stageTimeout bounds one stage of a multi-process test.
const stageTimeout = 3 * time.Minute
