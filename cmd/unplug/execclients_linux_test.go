package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/scenarios"
)

// tsharkRetransmits counts the segments tshark's TCP analysis calls
// retransmissions from the program (towards port) in a capture.
func tsharkRetransmits(t *testing.T, pcap string, port int) int {
	t.Helper()
	out, err := exec.Command("tshark", "-r", pcap, "-Y",
		"tcp.analysis.retransmission && tcp.dstport == "+strconv.Itoa(port), "-T", "fields", "-e", "frame.number").Output()
	if err != nil {
		t.Fatalf("tshark -r %s: %v", pcap, err)
	}
	return len(strings.Fields(string(out)))
}

// realClient is one unmodified client run through an outage with
// `unplug exec --report --pcap`, with what its report must conclude.
type realClient struct {
	name  string
	tools []string
	// server starts the upstream in the rig; returns its port.
	server func(t *testing.T, r *rig) int
	// args are unplug exec's flags before "--"; argv the client.
	args func(port int) []string
	argv func(port int) []string
	// check examines the program's output and the report's connection
	// to the upstream.
	check func(t *testing.T, code int, stdout, stderr string, rep *scenarios.Report, cs []scenarios.ConnReport)
}

// TestExecRealClients runs curl, Python requests, redis-cli and psql —
// clients nobody here wrote — against real servers in a separate namespace
// with --transparent, through an outage that drops every data segment,
// and checks the report's per-connection conclusions against what the
// program printed and against tshark's reading of the capture.
func TestExecRealClients(t *testing.T) {
	requireTools(t, "tshark", "/usr/bin/python3")
	for _, tc := range []realClient{
		{
			name:  "curl -m 3",
			tools: []string{"curl"},
			server: func(t *testing.T, r *rig) int {
				dir := t.TempDir()
				os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
				r.serve(t, 8000, "", "/usr/bin/python3", "-m", "http.server", "--bind", rigUpstreamAddr, "--directory", dir, "8000")
				return 8000
			},
			args: func(int) []string { return []string{"--fault", "drop flags=data"} },
			argv: func(port int) []string {
				return []string{"curl", "-sS", "-m", "3", "http://" + rigUpstreamAddr + ":" + strconv.Itoa(port) + "/f"}
			},
			check: func(t *testing.T, code int, stdout, stderr string, rep *scenarios.Report, cs []scenarios.ConnReport) {
				// curl's own timeout: exit 28 after 3 s; the report says
				// the program closed it, ≈ 3 s into the fault, long before
				// the kernel's ≈ 15 min.
				if code != 28 || !strings.Contains(stderr, "timed out") {
					t.Errorf("curl exit %d, stderr %q: want 28, timed out", code, stderr)
				}
				c := one(t, cs)
				wantEnd(t, c, scenarios.EndClosed, 2500*time.Millisecond, 5*time.Second)
				if c.Settings.Source != "getsockopt" || !c.Settings.KeepAlive || c.Settings.KeepIdle != 60*time.Second {
					t.Errorf("settings %+v: curl turns keepalive on with a 60 s idle time", c.Settings)
				}
			},
		},
		{
			name:  "python requests timeout=2, then again",
			tools: []string{},
			server: func(t *testing.T, r *rig) int {
				dir := t.TempDir()
				os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
				r.serve(t, 8000, "", "/usr/bin/python3", "-m", "http.server", "--bind", rigUpstreamAddr, "--directory", dir, "8000")
				return 8000
			},
			args: func(int) []string {
				return []string{"--fault", "drop flags=data for=4s", "--expect", "detect<30s", "--expect", "reconnected"}
			},
			argv: func(port int) []string {
				url := "http://" + rigUpstreamAddr + ":" + strconv.Itoa(port) + "/f"
				return []string{"/usr/bin/python3", "-c", `
import requests, time, sys
t = time.time()
try:
    requests.get("` + url + `", timeout=2)
    print("first: answered")
except requests.exceptions.RequestException as e:
    print("first:", type(e).__name__, "after %.1f s" % (time.time() - t))
time.sleep(max(0, 5 - (time.time() - t)))
print("second:", requests.get("` + url + `", timeout=5).status_code)
`}
			},
			check: func(t *testing.T, code int, stdout, stderr string, rep *scenarios.Report, cs []scenarios.ConnReport) {
				if code != 0 || !strings.Contains(stdout, "first: ReadTimeout after 2.") || !strings.Contains(stdout, "second: 200") {
					t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
				}
				if len(cs) != 2 {
					t.Fatalf("want 2 connections, got %+v", cs)
				}
				wantEnd(t, cs[0], scenarios.EndClosed, 1500*time.Millisecond, 4*time.Second)
				if cs[1].FaultHit != nil || cs[1].BytesReceived == 0 {
					t.Errorf("second connection %+v: want untouched and answered", cs[1])
				}
				if rep.Verdict != scenarios.VerdictPass {
					t.Errorf("verdict %s: %+v", rep.Verdict, rep.Expectations)
				}
			},
		},
		{
			name:  "redis-cli, tcp_retries2=3",
			tools: []string{"redis-server", "redis-cli"},
			server: func(t *testing.T, r *rig) int {
				r.serve(t, 6379, "", "redis-server", "--bind", rigUpstreamAddr, "--port", "6379", "--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", t.TempDir())
				return 6379
			},
			args: func(int) []string { return []string{"--retries2", "3", "--fault", "drop flags=data"} },
			argv: func(port int) []string {
				return []string{"redis-cli", "-h", rigUpstreamAddr, "-p", strconv.Itoa(port), "PING"}
			},
			check: func(t *testing.T, code int, stdout, stderr string, rep *scenarios.Report, cs []scenarios.ConnReport) {
				// hiredis words ETIMEDOUT from recv as "recv timeout".
				if code == 0 || !strings.Contains(stdout+stderr, "recv timeout") {
					t.Errorf("redis-cli exit %d, output %q: want hiredis's recv timeout (ETIMEDOUT)", code, stdout+stderr)
				}
				c := one(t, cs)
				wantEnd(t, c, scenarios.EndTimeoutRetries, 5*time.Second, 9*time.Second)
				if c.Settings.Retries2 != 3 || c.Settings.Source != "getsockopt" || !c.Settings.KeepAlive {
					t.Errorf("settings %+v: redis-cli turns keepalive on; tcp_retries2=3", c.Settings)
				}
				row, ok := rep.Expectation("c1 timeout-retries")
				if !ok || !row.Pass {
					t.Errorf("theory row %+v: the measured timeout must match the tcp_retries2 model", row)
				}
			},
		},
		{
			name:  "psql, tcp_retries2=3",
			tools: []string{"psql", "runuser", "setpriv"},
			server: func(t *testing.T, r *rig) int {
				return startPostgres(t, r)
			},
			// The first query's reply comes back; the second query, sent
			// into the outage, is never acknowledged.
			args: func(int) []string {
				return []string{"--retries2", "3", "--timeout", "40s", "--fault", "drop dir=in flags=data after=1s"}
			},
			argv: func(port int) []string {
				return []string{"psql", "-X", "-h", rigUpstreamAddr, "-p", strconv.Itoa(port), "-U", "postgres", "-c", "select pg_sleep(2)", "-c", "select 1"}
			},
			check: func(t *testing.T, code int, stdout, stderr string, rep *scenarios.Report, cs []scenarios.ConnReport) {
				if code == 0 || !strings.Contains(stderr, "timed out") {
					t.Errorf("psql exit %d, stderr %q: want a timeout error", code, stderr)
				}
				c := one(t, cs)
				wantEnd(t, c, scenarios.EndTimeoutRetries, 5*time.Second, 9*time.Second)
				if !c.Settings.KeepAlive || c.Settings.Source != "getsockopt" {
					t.Errorf("settings %+v: libpq turns keepalive on", c.Settings)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireTools(t, tc.tools...)
			r := newRig(t)
			port := tc.server(t, r)
			dir := t.TempDir()
			rp, pcap := filepath.Join(dir, "r.json"), filepath.Join(dir, "c.pcapng")
			args := append([]string{"exec", "--transparent", "--json", "--report-file", rp, "--pcap", pcap}, tc.args(port)...)
			code, stdout, stderr := r.unplug(t, append(append(args, "--"), tc.argv(port)...)...)
			rep := readReport(t, rp)
			cs := connsTo(rep, rigUpstreamAddr+":"+strconv.Itoa(port))
			t.Logf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
			for _, c := range cs {
				t.Logf("c%d: %s at %.3f s (%s); %s; %s", c.ID, c.End.How, c.End.At.Seconds(), c.End.Evidence, c.Theory, c.Verdict)
			}
			tc.check(t, code, stdout, stderr, rep, cs)
			// The report and tshark read the same packets the same way.
			retrans := 0
			for _, c := range cs {
				retrans += c.Retransmits
			}
			if got := tsharkRetransmits(t, pcap, port); got != retrans {
				t.Errorf("tshark counts %d retransmissions towards port %d, the report %d", got, port, retrans)
			}
		})
	}
}

// one returns the only connection.
func one(t *testing.T, cs []scenarios.ConnReport) scenarios.ConnReport {
	t.Helper()
	if len(cs) != 1 {
		t.Fatalf("want one connection to the upstream, got %d: %+v", len(cs), cs)
	}
	return cs[0]
}

// wantEnd checks how a connection ended and that it noticed the fault
// between lo and hi after the first drop (a wide tolerance: it tells a
// 3 s application timeout from a 6.7 s kernel one, and both from 15 min).
func wantEnd(t *testing.T, c scenarios.ConnReport, how string, lo, hi time.Duration) {
	t.Helper()
	if c.End.How != how {
		t.Errorf("c%d ended %s (%s), want %s", c.ID, c.End.How, c.End.Detail, how)
		return
	}
	if c.Noticed == nil || *c.Noticed < lo || *c.Noticed > hi {
		t.Errorf("c%d noticed after %v, want %v – %v", c.ID, c.Noticed, lo, hi)
	}
}

// startPostgres initializes a throwaway cluster owned by the postgres user
// and serves it in the upstream namespace, trusting every connection.
func startPostgres(t *testing.T, r *rig) int {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		t.Skip("no PostgreSQL server (make deps installs postgresql)")
	}
	bin := filepath.Dir(bins[len(bins)-1])
	dir, err := os.MkdirTemp("", "h1b-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if out, err := exec.Command("chown", "postgres:postgres", dir).CombinedOutput(); err != nil {
		t.Skipf("no postgres user: %v %s", err, out)
	}
	os.Chmod(dir, 0o700)
	data := filepath.Join(dir, "data")
	if out, err := exec.Command("runuser", "-u", "postgres", "--", filepath.Join(bin, "initdb"), "-A", "trust", "-U", "postgres", "-D", data).CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	hba, err := os.OpenFile(filepath.Join(data, "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	hba.WriteString("host all all 198.19.7.0/24 trust\n")
	hba.Close()
	r.serve(t, 5432, "postgres", filepath.Join(bin, "postgres"), "-D", data, "-k", dir, "-h", rigUpstreamAddr, "-p", "5432")
	return 5432
}
