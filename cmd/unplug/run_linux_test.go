package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runInProc runs unplug in-process and returns its exit code and output.
func runInProc(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := run(context.Background(), args, &out, &out)
	return code, out.String()
}

func TestRunVirtualCLI(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "steps")
	os.WriteFile(script, []byte("\nn 3\nc\n"), 0o600)
	tests := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"json", []string{"run", "timeout", "--clock", "virtual", "--retries2", "15", "--json"}, 0, []string{`"outcome": "ETIMEDOUT"`, `"clock": "virtual"`}},
		{"expect met", []string{"run", "brief-outage", "--clock", "virtual", "--expect", "recovered"}, 0, []string{"recovered"}},
		{"expect not met", []string{"run", "timeout", "--clock", "virtual", "--expect", "ECONNRESET"}, 1, []string{"expected ECONNRESET, got ETIMEDOUT"}},
		{"bad expect", []string{"run", "timeout", "--expect", "sunshine"}, 2, []string{"sunshine"}},
		{"bad param", []string{"run", "timeout", "--retries2", "many"}, 2, []string{"retries2"}},
		{"unknown scenario", []string{"run", "nope"}, 2, []string{`unknown scenario "nope"`, "timeout"}},
		{"kernel only", []string{"run", "sendbuf-full", "--clock", "virtual"}, 2, []string{"--clock real"}},
		{"step needs virtual", []string{"run", "timeout", "--step"}, 2, []string{"--clock virtual"}},
		{"step script", []string{"run", "timeout", "--clock", "virtual", "--step-script", script}, 0, []string{"retransmitTimerExpired", "step> "}},
		{"list", []string{"scenarios"}, 0, []string{"timeout", "brief-outage", "keepalive", "--retries2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := runInProc(t, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d:\n%s", code, tt.code, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if tt.code == 2 && strings.Count(strings.TrimSpace(out), "\n") != 0 {
				t.Errorf("usage error is not one line:\n%s", out)
			}
		})
	}
}

// TestRunRealCLI runs a scenario against the kernel with --svg and --pcap.
func TestRunRealCLI(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for the private namespace")
	}
	dir := t.TempDir()
	svg, pcap := filepath.Join(dir, "g.svg"), filepath.Join(dir, "c.pcapng")
	code, out := runInProc(t, "run", "brief-outage", "--outage", "1s", "--svg", svg, "--pcap", pcap, "--expect", "recovered")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	b, err := os.ReadFile(svg)
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(bytes.NewReader(b))
	for {
		if _, err := d.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("svg is not XML: %v", err)
		}
	}
	if st, err := os.Stat(pcap); err != nil || st.Size() == 0 {
		t.Fatalf("no capture: %v", err)
	}
}

// TestExecCLI runs curl (from Debian) inside the private namespace against
// the peer's http service and through --forward to a loopback server in
// the test's own namespace, and checks that exit codes pass through.
func TestExecCLI(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for the private namespace")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello from upstream")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	fwd := "8080=" + ln.Addr().String()
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"http", []string{"exec", "--", "curl", "-s", "-m", "10", "http://198.18.0.2/404"}, 0, "Error code: 404"},
		{"forward", []string{"exec", "--forward", fwd, "--", "curl", "-s", "-m", "10", "http://198.18.0.2:8080/"}, 0, "hello from upstream"},
		{"outage recovers", []string{"exec", "--fault", "drop for=1s", "--", "curl", "-s", "-m", "20", "http://198.18.0.2/"}, 0, "404"},
		{"dead link fails", []string{"exec", "--fault", "drop", "--", "curl", "-s", "-m", "2", "http://198.18.0.2/"}, 28, ""},
		{"exit code", []string{"exec", "--", "sh", "-c", "exit 7"}, 7, ""},
		{"missing program", []string{"exec", "--", "no-such-program-here"}, 127, "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := runInProc(t, tt.args...)
			if code != tt.code || !strings.Contains(out, tt.want) {
				t.Fatalf("exit %d (want %d), output:\n%s", code, tt.code, out)
			}
		})
	}
}
