package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/internal/tuntest"
)

// TestExecSignals: SIGTERM and SIGINT sent to unplug reach the program,
// whose trap runs; unplug waits for it, returns its exit code and then
// cleans up (the capture is complete, the namespace gone). A program that
// ignores SIGTERM is killed after --grace.
func TestExecSignals(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name  string
		sig   syscall.Signal
		trap  string
		grace string
		code  int
		out   string
	}{
		{"SIGTERM runs the trap", syscall.SIGTERM, `trap 'echo got TERM; exit 3' TERM`, "10s", 3, "got TERM"},
		{"SIGINT runs the trap", syscall.SIGINT, `trap 'echo got INT; exit 4' INT`, "10s", 4, "got INT"},
		{"SIGTERM ignored: killed after the grace", syscall.SIGTERM, `trap '' TERM`, "500ms", 137, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pcap := filepath.Join(t.TempDir(), "c.pcapng")
			script := tc.trap + `; echo trap set; i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done`
			p := startProc(t, procSpec{argv: []string{unplugBinary(t), "exec", "--grace", tc.grace, "--pcap", pcap, "--", "sh", "-c", script}})
			deadline := time.Now().Add(safetyTimeout)
			for !strings.Contains(p.stdout.String(), "trap set") {
				if time.Now().After(deadline) {
					t.Fatalf("the program never started: %s", p.stderr.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			kids := descendants(p.cmd.Process.Pid)
			p.signal(t, tc.sig)
			if code := p.wait(t); code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.code, p.stderr.String())
			}
			if !strings.Contains(p.stdout.String(), tc.out) {
				t.Errorf("stdout %q lacks %q", p.stdout.String(), tc.out)
			}
			for _, k := range kids {
				tuntest.AwaitExit(t, k, safetyTimeout)
			}
			if st, err := os.Stat(pcap); err != nil || st.Size() == 0 {
				t.Errorf("capture %s not written: %v", pcap, err)
			}
		})
	}
}

// TestExecSysctl: --sysctl and --retries2 set net.* sysctls inside the
// program's namespace only; anything else is a usage error.
func TestExecSysctl(t *testing.T) {
	requireRoot(t)
	host, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_retries2")
	code, stdout, stderr := runCLI(t, "exec", "--retries2", "4", "--sysctl", "net.ipv4.tcp_keepalive_time=30", "--",
		"cat", "/proc/sys/net/ipv4/tcp_retries2", "/proc/sys/net/ipv4/tcp_keepalive_time")
	if code != 0 || stdout != "4\n30\n" {
		t.Errorf("exit %d, stdout %q, stderr %q; want 4 and 30", code, stdout, stderr)
	}
	if after, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_retries2"); string(after) != string(host) {
		t.Errorf("the host's tcp_retries2 changed: %q → %q", host, after)
	}
	for _, bad := range [][]string{{"--sysctl", "kernel.panic=1"}, {"--sysctl", "net.ipv4.tcp_retries2"}, {"--expect", "detect<soon"}} {
		code, _, stderr := runCLI(t, append(append([]string{"exec"}, bad...), "--", "true")...)
		if code != 2 {
			t.Errorf("exec %v: exit %d, want 2 (usage)", bad, code)
		}
		oneLine(t, "stderr", stderr)
	}
}

// TestExecHanging: a program that never notices the dead link (recv with
// no timeout, kernel defaults: ≈ 15 min) is stopped by --timeout, and the
// report says its connection is STILL HANGING, with the theory and a
// failed detect gate (exit 1).
func TestExecHanging(t *testing.T) {
	requireRoot(t)
	requireTools(t, "/usr/bin/python3")
	dir := t.TempDir()
	rp, svg := filepath.Join(dir, "r.json"), filepath.Join(dir, "g.svg")
	script := `
import socket, time
s = socket.create_connection(("198.18.0.2", 7))
time.sleep(1.5)
s.sendall(b"ping")
print(s.recv(100))
`
	code, _, stderr := runCLI(t, "exec", "--timeout", "4s", "--fault", "drop after=1s", "--expect", "detect<30s",
		"--json", "--report-file", rp, "--svg", svg, "--", "/usr/bin/python3", "-c", script)
	if code != 1 || !strings.Contains(stderr, "expectation not met") {
		t.Errorf("exit %d, stderr %q: want 1, expectation not met", code, stderr)
	}
	rep := readReport(t, rp)
	if !strings.Contains(rep.Exec.Stopped, "--timeout 4s: SIGTERM") || rep.Exec.ExitCode != 128+int(syscall.SIGTERM) {
		t.Errorf("stopped %q, exit %d: want --timeout 4s: SIGTERM, 143", rep.Exec.Stopped, rep.Exec.ExitCode)
	}
	cs := connsTo(rep, "198.18.0.2:7")
	if len(cs) != 1 || cs[0].End.How != "hanging" || !strings.Contains(cs[0].Theory, "tcp_retries2=15") {
		t.Fatalf("connections %+v: want one, hanging, with the tcp_retries2=15 theory", cs)
	}
	if st, err := os.Stat(svg); err != nil || st.Size() == 0 {
		t.Errorf("--svg %s not written: %v", svg, err)
	}
}
