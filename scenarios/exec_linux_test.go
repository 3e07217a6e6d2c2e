package scenarios

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/unplug-dev/unplug/stack/fault"
)

// TestExecReportInProcess runs Exec with the report in this process (so
// the race detector sees the recorder, the connection tracker and the
// sampler together): a request into an outage at tcp_retries2=2 is named
// a tcp_retries2 timeout by the kernel view, matching the theory, and the
// table renders it.
func TestExecReportInProcess(t *testing.T) {
	requireNamespaces(t)
	py, err := exec.LookPath("/usr/bin/python3")
	if err != nil {
		t.Skip("needs /usr/bin/python3")
	}
	sp, err := fault.ParseSpec("drop after=1s")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
	defer cancel()
	var out bytes.Buffer
	res, err := Exec(ctx, ExecOptions{
		Argv: []string{py, "-c", `
import socket, time
s = socket.create_connection(("198.18.0.2", 7))
time.sleep(1.5)
s.sendall(b"ping")
try:
    s.recv(4)
except OSError as e:
    print(e.strerror)
`},
		Faults: []fault.Spec{sp}, Sysctls: map[string]string{"net.ipv4.tcp_retries2": "2"},
		Stdout: &out, Stderr: &out, Report: true, Expect: []ExecExpect{{Raw: "detect<30s", Detect: true, Within: safetyTimeout / 3}},
	})
	if err != nil || res.Code != 0 || !strings.Contains(out.String(), "Connection timed out") {
		t.Fatalf("exit %d, %v\n%s", res.Code, err, out.String())
	}
	rep := res.Report
	if rep == nil || rep.Exec == nil || len(rep.Exec.Conns) != 1 {
		t.Fatalf("report %+v: want one connection", rep)
	}
	c := rep.Exec.Conns[0]
	if c.End.How != EndTimeoutRetries || !strings.Contains(c.End.Evidence, "kernel") || c.Settings.Retries2 != 2 {
		t.Errorf("ended %s [%s], retries2 %d: want timeout-retries from the kernel view, 2", c.End.How, c.End.Evidence, c.Settings.Retries2)
	}
	if rep.Verdict != VerdictPass {
		t.Errorf("verdict %s: %+v", rep.Verdict, rep.Expectations)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil || !strings.Contains(table.String(), "TIMEOUT-RETRIES") {
		t.Errorf("table (%v):\n%s", err, table.String())
	}
}
