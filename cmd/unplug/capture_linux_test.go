package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestCleanClose checks with tshark that a connection closed cleanly is
// captured as a whole FIN exchange and nothing after it, whether serve
// stops, a scenario ends or an exec'd program exits: no RST from the peer's
// teardown, timestamps that never go backwards, and packet counts that
// match the capture.
func TestCleanClose(t *testing.T) {
	if !requireNetns(t) {
		return
	}
	requireTools(t, "tshark", "curl")
	dir := t.TempDir()
	tests := []struct {
		name  string
		count func(t *testing.T, pcap string) int // packets unplug reported, -1 = none
	}{
		{"run", func(t *testing.T, pcap string) int {
			code, out := runInProc(t, "run", "brief-outage", "--outage", "1s", "--pcap", pcap)
			if code != 0 {
				t.Fatalf("run brief-outage exited %d:\n%s", code, out)
			}
			return reportedCount(t, out, `(?m)^packets +(\d+) seen`)
		}},
		{"exec", func(t *testing.T, pcap string) int {
			code, out := runInProc(t, "exec", "--pcap", pcap, "--", "curl", "-s", "-m", "10", "http://198.18.0.2/404")
			if code != 0 || !strings.Contains(out, "404") {
				t.Fatalf("exec curl exited %d:\n%s", code, out)
			}
			return -1
		}},
		{"serve", func(t *testing.T, pcap string) int {
			var out string
			t.Run("serving", func(t *testing.T) {
				var sp *servePeer
				t.Cleanup(func() { out = sp.out.String() }) // runs after serve stopped
				sp = startServe(t, "--pcap", pcap)
				c := dial(t, "80", 0)
				sp.waitAccepted(t, c)
				io.WriteString(c, request)
				if b, err := io.ReadAll(c); err != nil || !strings.Contains(string(b), "404") {
					t.Fatalf("GET: %v %q", err, b)
				}
				c.Close()
			})
			m := regexp.MustCompile(`packets in (\d+), out (\d+)`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("serve printed no packet counters:\n%s", out)
			}
			in, _ := strconv.Atoi(m[1])
			outN, _ := strconv.Atoi(m[2])
			return in + outN
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pcap := filepath.Join(dir, tt.name+".pcapng")
			reported := tt.count(t, pcap)
			frames := tsharkFields(t, pcap, "", "frame.number")
			if len(frames) == 0 {
				t.Fatal("empty capture")
			}
			if rst := tsharkFields(t, pcap, "tcp.flags.reset == 1", "frame.number"); len(rst) > 0 {
				t.Errorf("RST in frames %v after a clean close:\n%s", rst, tsharkSummary(t, pcap))
			}
			if back := tsharkFields(t, pcap, "frame.time_delta < 0", "frame.number"); len(back) > 0 {
				t.Errorf("timestamps go backwards at frames %v", back)
			}
			fins := tsharkFields(t, pcap, "tcp.flags.fin == 1", "ip.src")
			if len(fins) != 2 || fins[0] == fins[1] {
				t.Errorf("want one FIN from each end, got from %v:\n%s", fins, tsharkSummary(t, pcap))
			}
			// The last TCP packet acknowledges the second FIN: the exchange
			// finished. (The kernel may still send an IPv6 router
			// solicitation after it.)
			flags := tsharkFields(t, pcap, "tcp", "tcp.flags.str")
			if last := flags[len(flags)-1]; !strings.Contains(last, "A") || strings.Contains(last, "F") {
				t.Errorf("the last TCP packet has flags %s, want the ACK of the last FIN:\n%s", last, tsharkSummary(t, pcap))
			}
			if reported >= 0 && reported != len(frames) {
				t.Errorf("unplug reported %d packets, the capture holds %d", reported, len(frames))
			}
		})
	}
}

// reportedCount extracts the packet count a report printed.
func reportedCount(t *testing.T, out, pattern string) int {
	t.Helper()
	m := regexp.MustCompile(pattern).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no packet count (%s) in:\n%s", pattern, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// tsharkFields returns one field of each frame matching filter.
func tsharkFields(t *testing.T, pcap, filter, field string) []string {
	t.Helper()
	args := []string{"-r", pcap, "-T", "fields", "-e", field}
	if filter != "" {
		args = append(args, "-Y", filter)
	}
	cmd := exec.Command("tshark", args...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir()) // no user profile
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark %s: %v", strings.Join(args, " "), err)
	}
	return strings.Fields(string(out))
}

// tsharkSummary is tshark's one-line-per-packet view, for failure messages.
func tsharkSummary(t *testing.T, pcap string) string {
	out, _ := exec.Command("tshark", "-r", pcap).Output()
	return string(out)
}
