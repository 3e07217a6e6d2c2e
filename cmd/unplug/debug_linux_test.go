package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-delve/delve/service/api"
	"github.com/go-delve/delve/service/rpc2"
)

const retransmitTimer = "gvisor.dev/gvisor/pkg/tcpip/transport/tcp.(*sender).retransmitTimerExpired"

// TestDelveBreakpoints is docs/debugging.md's recipe, automated: a build
// without optimisations runs `unplug run timeout --clock virtual` under a
// headless delve (the module's tool dependency); a breakpoint on gVisor's
// retransmission timer must be hit once per RTO firing — 15 with gVisor's
// defaults — at virtual times doubling from 2 s and capped at 120 s steps;
// and while the process is stopped the virtual clock must not move.
func TestDelveBreakpoints(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an unoptimised binary (about a minute)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "unplug-debug")
	build := exec.Command("go", "build", "-gcflags=all=-N -l", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("debug build: %v\n%s", err, out)
	}
	dlv := exec.Command("go", "tool", "dlv", "exec", "--headless", "--api-version=2",
		"--listen=127.0.0.1:0", "--accept-multiclient=false", bin, "--",
		"run", "timeout", "--clock", "virtual", "--retries2", "15")
	dlv.Stderr = os.Stderr
	stdout, err := dlv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := dlv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dlv.Process.Kill()
		dlv.Wait()
	})
	lines := bufio.NewScanner(stdout)
	addr := ""
	listening := regexp.MustCompile(`API server listening at: (\S+)`)
	for addr == "" && lines.Scan() {
		if m := listening.FindStringSubmatch(lines.Text()); m != nil {
			addr = m[1]
		}
	}
	if addr == "" {
		t.Fatal("delve never said where it listens")
	}
	go func() { // keep draining the program's output
		for lines.Scan() {
		}
	}()
	client := rpc2.NewClient(addr)
	defer client.Detach(true)
	if _, err := client.CreateBreakpoint(&api.Breakpoint{FunctionName: retransmitTimer}); err != nil {
		t.Fatalf("breakpoint on %s: %v", retransmitTimer, err)
	}
	var hits []time.Duration
	for {
		state := <-client.Continue()
		if state.Exited {
			break
		}
		if state.Err != nil {
			t.Fatal(state.Err)
		}
		g := state.CurrentThread.GoroutineID
		if state.CurrentThread.Function == nil || state.CurrentThread.Function.Name() != retransmitTimer {
			t.Fatalf("stopped in %v, not at the breakpoint", state.CurrentThread.Function)
		}
		now := virtualNow(t, client, g)
		time.Sleep(50 * time.Millisecond) // real time passes while stopped...
		if again := virtualNow(t, client, g); again != now {
			t.Fatalf("virtual clock moved while stopped: %v then %v", now, again) // ...virtual time must not
		}
		hits = append(hits, now)
	}
	if len(hits) != 15 {
		t.Fatalf("retransmit timer hit %d times, want 15: %v", len(hits), hits)
	}
	// gVisor's sender with no RTT sample (docs/facts.md): the tail-loss probe at
	// 1 s, then RTO firings at 2, 4 … 128 s, then every 120 s up to 1088 s.
	if hits[0] != 2*time.Second {
		t.Errorf("first RTO firing at virtual %v, want 2s", hits[0])
	}
	var prev time.Duration
	for i := 1; i < len(hits); i++ {
		step := hits[i] - hits[i-1]
		wantStep := 2 * time.Second // 2 → 4 s
		if i > 1 {
			wantStep = min(2*prev, 120*time.Second)
		}
		if step != wantStep {
			t.Errorf("hit %d: %v after the previous one, want %v (all: %v)", i+1, step, wantStep, hits)
		}
		prev = step
	}
	if last := hits[len(hits)-1]; last != 1088*time.Second {
		t.Errorf("last RTO firing at %v, want 1088s", last)
	}
}

// virtualNow reads the virtual clock from the frame of vlink.(*Clock).FireNext
// on goroutine g's stack.
func virtualNow(t *testing.T, c *rpc2.RPCClient, g int64) time.Duration {
	t.Helper()
	frames, err := c.Stacktrace(g, 30, 0, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range frames {
		if f.Function != nil && strings.HasSuffix(f.Function.Name(), "vlink.(*Clock).FireNext") {
			v, err := c.EvalVariable(api.EvalScope{GoroutineID: g, Frame: i}, "c.now", api.LoadConfig{})
			if err != nil {
				t.Fatal(err)
			}
			// Delve may print a matching constant's name: "pkg.name (2000000000)".
			m := regexp.MustCompile(`(-?\d+)\)?$`).FindStringSubmatch(v.Value)
			if m == nil {
				t.Fatalf("c.now = %q: not a number", v.Value)
			}
			n, err := strconv.ParseInt(m[1], 10, 64)
			if err != nil {
				t.Fatalf("c.now = %q: %v", v.Value, err)
			}
			return time.Duration(n)
		}
	}
	t.Fatal("no vlink.(*Clock).FireNext frame: the timer did not fire from the virtual clock")
	return 0
}
