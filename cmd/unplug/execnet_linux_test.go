package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/scenarios"
)

// Addresses of the two-namespace rig: unplug runs in the client namespace,
// the real servers in the upstream namespace, joined by a veth pair.
const (
	rigClientAddr   = "198.19.7.1"
	rigUpstreamAddr = "198.19.7.2"
	rigClientAddr6  = "fd00:197:7::1"
	rigUpstream6    = "fd00:197:7::2"
)

var rigSeq atomic.Int32

// rig is a pair of network namespaces made for one test: unplug runs in
// client (where its peer dials upstreams from), real servers in upstream.
type rig struct {
	client, upstream string
}

// newRig creates the namespaces and the veth pair between them; the test's
// cleanup deletes both (and so the veth).
func newRig(t *testing.T) *rig {
	t.Helper()
	requireRoot(t)
	requireTools(t, "ip")
	id := fmt.Sprintf("%d-%d", os.Getpid()%100000, rigSeq.Add(1))
	r := &rig{client: "h1b-cl-" + id, upstream: "h1b-up-" + id}
	for _, ns := range []string{r.client, r.upstream} {
		ipCmd(t, "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	}
	ipCmd(t, "-n", r.client, "link", "add", "h1bc", "type", "veth", "peer", "name", "h1bu", "netns", r.upstream)
	ipCmd(t, "-n", r.client, "addr", "add", rigClientAddr+"/24", "dev", "h1bc")
	ipCmd(t, "-n", r.upstream, "addr", "add", rigUpstreamAddr+"/24", "dev", "h1bu")
	ipCmd(t, "-n", r.client, "addr", "add", rigClientAddr6+"/64", "dev", "h1bc", "nodad")
	ipCmd(t, "-n", r.upstream, "addr", "add", rigUpstream6+"/64", "dev", "h1bu", "nodad")
	ipCmd(t, "-n", r.client, "link", "set", "h1bc", "up")
	ipCmd(t, "-n", r.upstream, "link", "set", "h1bu", "up")
	return r
}

// serve starts a server in the upstream namespace (as user, if not "")
// and waits until connecting to port from the client namespace works.
// Both ip netns exec and setpriv exec the next program, so the process the
// test's cleanup kills is the server itself.
func (r *rig) serve(t *testing.T, port int, user string, argv ...string) *proc {
	t.Helper()
	full := []string{"ip", "netns", "exec", r.upstream}
	if user != "" {
		full = append(full, "setpriv", "--reuid="+user, "--regid="+user, "--init-groups", "--")
	}
	p := startProc(t, procSpec{argv: append(full, argv...)})
	deadline := time.Now().Add(safetyTimeout)
	for {
		// Either address family will do: the server listens on one.
		probe := exec.Command("ip", "netns", "exec", r.client, "/usr/bin/python3", "-c", fmt.Sprintf(`
import socket, sys
for a in ('%s', '%s'):
    try:
        socket.create_connection((a, %d), 1).close(); sys.exit(0)
    except OSError:
        pass
sys.exit(1)`, rigUpstreamAddr, rigUpstream6, port))
		if probe.Run() == nil {
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited: %v\n%s%s", strings.Join(argv, " "), p.err, p.stdout.String(), p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never listened on %d", strings.Join(argv, " "), port)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// unplug runs the unplug binary in the client namespace and returns its
// exit code, stdout and stderr.
func (r *rig) unplug(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runSpec(t, procSpec{argv: append([]string{"ip", "netns", "exec", r.client, unplugBinary(t)}, args...)})
}

// readReport decodes a --json --report-file report.
func readReport(t *testing.T, path string) *scenarios.Report {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read the report: %v", err)
	}
	var rep scenarios.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("decode the report: %v\n%s", err, b)
	}
	if rep.Exec == nil {
		t.Fatalf("the report has no exec section:\n%s", b)
	}
	return &rep
}

// connsTo returns the report's connections to addr.
func connsTo(rep *scenarios.Report, addr string) []scenarios.ConnReport {
	var out []scenarios.ConnReport
	for _, c := range rep.Exec.Conns {
		if c.Peer == addr {
			out = append(out, c)
		}
	}
	return out
}

// TestExecTransparent: with --transparent an unmodified curl reaches a
// real HTTP server in another namespace through the peer (the peer
// terminates the connection and re-dials the real destination), the
// report names that destination, and unplug does not wait for a dial that
// never completes when the program is done.
func TestExecTransparent(t *testing.T) {
	requireTools(t, "curl", "/usr/bin/python3")
	r := newRig(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello from the other namespace\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.serve(t, 8000, "", "/usr/bin/python3", "-m", "http.server", "--bind", rigUpstreamAddr, "--directory", dir, "8000")
	target := rigUpstreamAddr + ":8000"

	t.Run("reaches the real upstream", func(t *testing.T) {
		rp := filepath.Join(t.TempDir(), "r.json")
		code, stdout, stderr := r.unplug(t, "exec", "--transparent", "--json", "--report-file", rp, "--",
			"curl", "-s", "-m", "10", "http://"+target+"/hello.txt")
		if code != 0 || stdout != "hello from the other namespace\n" {
			t.Fatalf("exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
		}
		rep := readReport(t, rp)
		cs := connsTo(rep, target)
		if len(cs) != 1 {
			t.Fatalf("want one connection to %s, report has %+v", target, rep.Exec.Conns)
		}
		c := cs[0]
		if !strings.Contains(c.Upstream, "real destination") || c.Established == nil || c.BytesReceived < int64(len("hello from the other namespace\n")) || c.End.How != scenarios.EndClosed {
			t.Errorf("connection %+v: want the real destination, established, the file received, closed by curl", c)
		}
	})

	t.Run("IPv6", func(t *testing.T) {
		r.serve(t, 8006, "", "/usr/bin/python3", "-m", "http.server", "--bind", rigUpstream6, "--directory", dir, "8006")
		rp := filepath.Join(t.TempDir(), "r.json")
		code, stdout, stderr := r.unplug(t, "exec", "--transparent", "--json", "--report-file", rp, "--",
			"curl", "-s", "-m", "10", "http://["+rigUpstream6+"]:8006/hello.txt")
		if code != 0 || stdout != "hello from the other namespace\n" {
			t.Fatalf("exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
		}
		if cs := connsTo(readReport(t, rp), "["+rigUpstream6+"]:8006"); len(cs) != 1 || cs[0].BytesReceived == 0 {
			t.Errorf("want one IPv6 connection with the file received, got %+v", cs)
		}
	})

	t.Run("a closed upstream port reads refused", func(t *testing.T) {
		// Nothing listens on 8009 upstream: its kernel resets the peer's
		// dial, and the peer refuses the program's connection with RST.
		rp := filepath.Join(t.TempDir(), "r.json")
		code, _, stderr := r.unplug(t, "exec", "--transparent", "--json", "--report-file", rp, "--",
			"curl", "-s", "-m", "10", "http://"+rigUpstreamAddr+":8009/")
		if code != 7 {
			t.Errorf("curl exit %d, want 7 (connection refused); stderr:\n%s", code, stderr)
		}
		cs := connsTo(readReport(t, rp), rigUpstreamAddr+":8009")
		if len(cs) != 1 || cs[0].End.How != scenarios.EndRefused || cs[0].Established != nil {
			t.Errorf("want one refused connection, got %+v", cs)
		}
	})

	t.Run("an upstream that never answers does not hold unplug", func(t *testing.T) {
		// SYNs to port 81 vanish in the upstream namespace: the peer's
		// dial would take the kernel's SYN retries (≈ 127 s).
		cmd := exec.Command("ip", "netns", "exec", r.upstream, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "81", "-j", "DROP")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Skipf("iptables in the upstream namespace: %v %s", err, out)
		}
		start := time.Now()
		code, _, stderr := r.unplug(t, "exec", "--transparent", "--", "curl", "-s", "-m", "1", "http://"+rigUpstreamAddr+":81/")
		took := time.Since(start)
		if code != 28 {
			t.Errorf("curl exit %d, want 28 (timeout); stderr:\n%s", code, stderr)
		}
		// Not a timing assertion: a dial left pending would hold unplug
		// for the kernel's ≈ 127 s of SYN retries.
		if took > 30*time.Second {
			t.Errorf("unplug took %v after curl gave up at 1 s: Close waited for the pending dial", took)
		}
		t.Logf("unplug exited %v after start (curl -m 1)", took)
	})
}

// TestExecReportForward: with --forward the report names the real
// upstream behind the peer's port and counts the bytes both ways.
func TestExecReportForward(t *testing.T) {
	requireRoot(t)
	requireTools(t, "curl")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("x", 5000)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	rp := filepath.Join(t.TempDir(), "r.json")
	code, stdout, stderr := runCLI(t, "exec", "--forward", "8080="+ln.Addr().String(), "--json", "--report-file", rp, "--",
		"curl", "-s", "-m", "10", "http://198.18.0.2:8080/")
	if code != 0 || stdout != body {
		t.Fatalf("exit %d, %d bytes, stderr %q", code, len(stdout), stderr)
	}
	c := one(t, connsTo(readReport(t, rp), "198.18.0.2:8080"))
	if c.Upstream != ln.Addr().String()+" (--forward 8080)" || c.BytesReceived < int64(len(body)) || c.BytesSent == 0 || c.End.How != scenarios.EndClosed {
		t.Errorf("connection %+v: want the forward target named, the body counted, closed by curl", c)
	}
}
