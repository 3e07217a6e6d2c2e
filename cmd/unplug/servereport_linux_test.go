package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/scenarios"
)

// TestServeReport: a running `serve --record` reports a client in its own
// namespace that sets TCP_USER_TIMEOUT: the kernel view reads the option
// and sees its request into an outage time out by it, and after the
// outage it reconnects; the gates pass.
func TestServeReport(t *testing.T) {
	requireRoot(t)
	requireTools(t, "unshare", "nsenter", "/usr/bin/python3")
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	p := startProc(t, procSpec{
		argv: []string{"unshare", "--net", "--", unplugBinary(t), "serve", "--record", "--control", sock},
		attr: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	})
	p.awaitReady(t)
	if code, out, errOut := runCLI(t, "fault", "--control", sock, "add", "drop after=1s for=4s"); code != 0 {
		t.Fatalf("fault add: exit %d %s%s", code, out, errOut)
	}
	script := `
import socket, time
t0 = time.time()
s = socket.create_connection(("198.18.0.2", 7))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 1000)
time.sleep(1.5)
s.sendall(b"ping")
try:
    s.recv(4)
    print("first: answered")
except OSError as e:
    print("first:", e.strerror)
time.sleep(max(0, 5.5 - (time.time() - t0)))
s2 = socket.create_connection(("198.18.0.2", 7))
s2.sendall(b"pong")
print("second:", s2.recv(4).decode())
s2.close()
`
	out, err := exec.Command("nsenter", "-t", fmt.Sprint(p.cmd.Process.Pid), "-n", "/usr/bin/python3", "-c", script).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "first: Connection timed out") || !strings.Contains(string(out), "second: pong") {
		t.Fatalf("client: %v\n%s", err, out)
	}
	rp := filepath.Join(dir, "r.json")
	code, stdout, stderr := runCLI(t, "report", "--control", sock, "--json", "--expect", "detect<30s", "--expect", "reconnected")
	if code != 0 {
		t.Errorf("report: exit %d, stderr %q", code, stderr)
	}
	if err := writeString(rp, stdout); err != nil {
		t.Fatal(err)
	}
	rep := readReport(t, rp)
	cs := connsTo(rep, "198.18.0.2:7")
	if len(cs) != 2 {
		t.Fatalf("want 2 connections to echo, got %+v", rep.Exec.Conns)
	}
	if cs[0].End.How != scenarios.EndTimeoutUser || !strings.Contains(cs[0].End.Evidence, "kernel") || cs[0].Settings.UserTimeout != time.Second {
		t.Errorf("first connection ended %s (%s) [%s], settings %+v: want timeout-user seen by the kernel, TCP_USER_TIMEOUT 1 s", cs[0].End.How, cs[0].End.Detail, cs[0].End.Evidence, cs[0].Settings)
	}
	if cs[1].Established == nil || cs[1].BytesReceived != 4 {
		t.Errorf("second connection %+v: want established, 4 bytes echoed", cs[1])
	}
	// Without --record, a clear error.
	p2 := startProc(t, procSpec{
		argv: []string{"unshare", "--net", "--", unplugBinary(t), "serve", "--control", filepath.Join(dir, "c2.sock")},
		attr: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	})
	p2.awaitReady(t)
	code, _, stderr = runCLI(t, "report", "--control", filepath.Join(dir, "c2.sock"))
	if code != 1 || !strings.Contains(stderr, "--record") {
		t.Errorf("report without --record: exit %d, %q", code, stderr)
	}
	oneLine(t, "stderr", stderr)
}

// writeString writes s to path.
func writeString(path, s string) error { return os.WriteFile(path, []byte(s), 0o644) }
