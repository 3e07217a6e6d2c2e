package main

import (
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/scenarios"
)

// kernelTimeoutClient is a Python client of the peer's echo service: with
// mode keepalive it sets keepalive 1/1/3 and waits idle; with user-timeout
// it sets TCP_USER_TIMEOUT 2 s, otherwise nothing; both modes but
// keepalive send a request into the outage. It prints how long recv took
// to fail.
const kernelTimeoutClient = `
import socket, time, sys
mode = sys.argv[1]
s = socket.create_connection(("198.18.0.2", 7))
if mode == "keepalive":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
else:
    if mode == "user-timeout":
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 2000)
    time.sleep(1.5)
    s.sendall(b"ping")
t = time.time()
try:
    s.recv(4)
    print("answered")
except OSError as e:
    print(e.strerror, "after %.2f s" % (time.time() - t))
`

// TestExecKernelTimeouts: for each limit that can end a connection in the
// kernel — keepalive, TCP_USER_TIMEOUT, tcp_retries2 — the report names it
// from the socket's own settings, its theory row passes, and the time it
// measured matches what the program itself saw.
func TestExecKernelTimeouts(t *testing.T) {
	requireRoot(t)
	requireTools(t, "/usr/bin/python3")
	after := regexp.MustCompile(`Connection timed out after ([0-9.]+) s`)
	for _, tc := range []struct {
		mode  string
		flags []string
		how   string
	}{
		{"keepalive", []string{"--fault", "drop after=0.5s"}, scenarios.EndTimeoutKeep},
		{"user-timeout", []string{"--fault", "drop after=1s"}, scenarios.EndTimeoutUser},
		{"retries2", []string{"--retries2", "4", "--fault", "drop after=1s"}, scenarios.EndTimeoutRetries},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			rp := filepath.Join(t.TempDir(), "r.json")
			args := append(append([]string{"exec", "--json", "--report-file", rp}, tc.flags...), "--", "/usr/bin/python3", "-c", kernelTimeoutClient, tc.mode)
			code, stdout, stderr := runCLI(t, args...)
			m := after.FindStringSubmatch(stdout)
			if code != 0 || m == nil {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
			}
			rep := readReport(t, rp)
			c := one(t, connsTo(rep, "198.18.0.2:7"))
			if c.End.How != tc.how || c.Settings.Source != "getsockopt" {
				t.Fatalf("ended %s (%s), settings from %s: want %s from getsockopt", c.End.How, c.End.Detail, c.Settings.Source, tc.how)
			}
			row, ok := rep.Expectation("c1 " + tc.how)
			if !ok || !row.Pass {
				t.Errorf("theory row %+v: want it present and met", row)
			}
			// The program's recv waited from its send (keepalive: from
			// the start of the wait, just after the last packet
			// received); the report measures from the same instants.
			prog, _ := strconv.ParseFloat(m[1], 64)
			if d := time.Duration(prog*float64(time.Second)) - time.Duration(*row.Got*float64(time.Second)); d < -time.Second || d > time.Second {
				t.Errorf("the program saw ETIMEDOUT after %.2f s, the report measured %.2f s", prog, *row.Got)
			}
		})
	}
}

// TestExecZeroWindow: a writer whose reader (the peer's sink) stopped
// reading sends zero-window probes; when an outage eats them, the kernel
// gives up after tcp_retries2 unanswered probes, and the report says so
// from the persist timer it saw.
func TestExecZeroWindow(t *testing.T) {
	requireRoot(t)
	requireTools(t, "/usr/bin/python3")
	rp := filepath.Join(t.TempDir(), "r.json")
	code, stdout, stderr := runCLI(t, "exec", "--retries2", "3", "--fault", "drop after=2s", "--json", "--report-file", rp, "--", "/usr/bin/python3", "-c", `
import socket
s = socket.create_connection(("198.18.0.2", 5001))
try:
    while True:
        s.send(b"x" * 65536)
except OSError as e:
    print(e.strerror)
`)
	if code != 0 || !strings.Contains(stdout, "Connection timed out") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	c := one(t, connsTo(readReport(t, rp), "198.18.0.2:5001"))
	if c.End.How != scenarios.EndTimeoutRetries || !strings.Contains(c.End.Detail, "zero-window probes") || c.Probes == 0 {
		t.Errorf("ended %s (%s) after %d probes: want timeout-retries by zero-window probes", c.End.How, c.End.Detail, c.Probes)
	}
}
