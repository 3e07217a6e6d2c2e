package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/unplug-dev/unplug/scenarios"
)

// TestExecReportRootless: as uid 65534, with no capability (a private user
// namespace), exec --report still has the kernel's view and the socket
// options: sock_diag in the program's namespace and pidfd_getfd on its
// descriptors work for the namespace's owner.
func TestExecReportRootless(t *testing.T) {
	if !inStage("h1b-rootless-report") {
		requireRoot(t)
		requireTools(t, "/usr/bin/python3")
		runStage(t, "h1b-rootless-report", privateNamespaces())
		return
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		t.Fatalf("make mounts private: %v", err)
	}
	mountTunOver(t, 0o666)
	work, err := os.MkdirTemp("", "unplug-home-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	if err := os.Chown(work, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	rp := filepath.Join(work, "r.json")
	script := `
import socket, time
s = socket.create_connection(("198.18.0.2", 7))
time.sleep(1.5)
s.sendall(b"ping")
try:
    s.recv(4)
except OSError as e:
    print(e.strerror)
`
	argv := []string{unplugBinary(t), "exec", "--retries2", "3", "--fault", "drop after=1s", "--json", "--report-file", rp, "--", "/usr/bin/python3", "-c", script}
	code, out, errOut := runSpec(t, procSpec{argv: argv, attr: asNobody(""), env: []string{"PATH=/usr/bin:/bin", "HOME=" + work}, dir: work})
	if code != 0 || !strings.Contains(out, "Connection timed out") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	rep := readReport(t, rp)
	c := one(t, connsTo(rep, "198.18.0.2:7"))
	if c.End.How != scenarios.EndTimeoutRetries || !strings.Contains(c.End.Evidence, "kernel") || len(c.Kernel) == 0 {
		t.Errorf("ended %s [%s] with %d kernel samples (%s): want timeout-retries seen by the kernel view", c.End.How, c.End.Evidence, len(c.Kernel), rep.Exec.KernelView)
	}
	if c.Settings.Source != "getsockopt" {
		t.Errorf("settings from %q (%s): want getsockopt", c.Settings.Source, rep.Exec.KernelView)
	}
}
