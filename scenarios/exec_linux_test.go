package scenarios

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

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
	var table bytes.Buffer
	terr := rep.WriteTable(&table)
	if rep.Verdict != VerdictPass {
		t.Errorf("verdict %s: %+v\n%s", rep.Verdict, rep.Expectations, table.String())
	}
	if terr != nil || !strings.Contains(table.String(), "TIMEOUT-RETRIES") {
		t.Errorf("table (%v):\n%s", terr, table.String())
	}
}

// TestExecConnectTimeoutOwnSettings: connect() into a dead link is
// predicted from the namespace's tcp_syn_linear_timeouts and the socket's
// own TCP_SYNCNT and TCP_USER_TIMEOUT, read from the program's
// descriptor, not from the defaults: TCP_SYNCNT=2 with 1 linear timeout
// resends at 1, 2, 4 s and ends at 8 s (the defaults' 4 linear timeouts
// would end it at 7 s, the default 6 retries at ≈ 131 s); a
// TCP_USER_TIMEOUT of 1.5 s ends the other at ≈ 1.5 s. Each ending gets
// a theory row that passes, and the texts show the numbers used.
func TestExecConnectTimeoutOwnSettings(t *testing.T) {
	requireNamespaces(t)
	py, err := exec.LookPath("/usr/bin/python3")
	if err != nil {
		t.Skip("needs /usr/bin/python3")
	}
	sp, err := fault.ParseSpec("drop")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
	defer cancel()
	var out bytes.Buffer
	res, err := Exec(ctx, ExecOptions{
		Argv: []string{py, "-c", `
import socket, threading
def dial(opt, val):
    s = socket.socket()
    s.setsockopt(socket.IPPROTO_TCP, opt, val)
    try:
        s.connect(("198.18.0.2", 7))
    except OSError as e:
        print(e.strerror)
ts = [threading.Thread(target=dial, args=a) for a in ((socket.TCP_SYNCNT, 2), (socket.TCP_USER_TIMEOUT, 1500))]
for t in ts: t.start()
for t in ts: t.join()
`},
		Faults: []fault.Spec{sp}, Sysctls: map[string]string{"net.ipv4.tcp_syn_linear_timeouts": "1"},
		Stdout: &out, Stderr: &out, Report: true,
	})
	if err != nil || res.Code != 0 || strings.Count(out.String(), "Connection timed out") != 2 {
		t.Fatalf("exit %d, %v\n%s", res.Code, err, out.String())
	}
	rep := res.Report
	if rep == nil || rep.Exec == nil || len(rep.Exec.Conns) != 2 {
		t.Fatalf("report %+v: want two connections", rep)
	}
	for _, c := range rep.Exec.Conns {
		if c.End.How != EndTimeoutSyn || c.Connect == nil {
			t.Fatalf("c%d ended %s (%s), connect theory %v: want timeout-syn with a theory", c.ID, c.End.How, c.End.Detail, c.Connect)
		}
		got := c.End.At - c.Opened
		want, words := 8*time.Second, []string{"2 SYN retries (TCP_SYNCNT", "tcp_syn_linear_timeouts=1", "SYNs resent at 1, 2, 4 s"}
		if c.Settings.UserTimeout > 0 {
			want, words = 1500*time.Millisecond, []string{"TCP_USER_TIMEOUT 1.5 s (it replaces", "SYNs resent at 1 s (1 retransmission)"}
		}
		if got < c.Connect.Min || got > c.Connect.Max || (c.Connect.Want-want).Abs() > 300*time.Millisecond {
			t.Errorf("c%d: ETIMEDOUT %v after the first SYN, theory %s, want it and the theory around %v", c.ID, got, c.Connect, want)
		}
		for _, w := range words {
			if !strings.Contains(c.Theory, w) {
				t.Errorf("c%d theory %q lacks %q", c.ID, c.Theory, w)
			}
		}
		if strings.Contains(c.Theory+c.Verdict, "127") {
			t.Errorf("c%d quotes the default's 127 s: %q / %q", c.ID, c.Theory, c.Verdict)
		}
	}
	rows := 0
	for _, e := range rep.Expectations {
		if strings.HasSuffix(e.Name, EndTimeoutSyn) {
			rows++
			if !e.Pass {
				t.Errorf("row %s failed: theory %s, measured %s", e.Name, e.Theory, e.Measured)
			}
		}
	}
	if rows != 2 || rep.Verdict != VerdictPass {
		t.Errorf("%d timeout-syn rows, verdict %s: want 2, pass (%+v)", rows, rep.Verdict, rep.Expectations)
	}
}
