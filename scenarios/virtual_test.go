package scenarios

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

func runVirtual(t *testing.T, name string, values map[string]string, opts Options) *Report {
	t.Helper()
	sc, ok := Lookup(name)
	if !ok {
		t.Fatalf("no scenario %s", name)
	}
	p, err := ParseParams(sc, values)
	if err != nil {
		t.Fatal(err)
	}
	opts.Clock = ClockVirtual
	rep, err := Run(context.Background(), name, p, opts)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return rep
}

// TestVirtualTimeoutGVisorDefaults: with gVisor's defaults the request is
// sent 1 + 15 times, the RTO doubles from 1 s and is capped at 120 s, and
// the application gets ETIMEDOUT (FACTS.md: at ≈ 1088 s).
func TestVirtualTimeoutGVisorDefaults(t *testing.T) {
	rep := runVirtual(t, "timeout", map[string]string{"retries2": "15"}, Options{})
	if rep.Outcome != "ETIMEDOUT" || rep.Errno != "ETIMEDOUT" {
		t.Fatalf("outcome %s errno %s, want ETIMEDOUT", rep.Outcome, rep.Errno)
	}
	var rtx []Retransmission
	for _, r := range rep.Retransmissions {
		if r.Dir == "in" && r.Kind == "retransmit" {
			rtx = append(rtx, r)
		}
	}
	if len(rtx) != 15 {
		t.Fatalf("%d retransmissions, want 15", len(rtx))
	}
	prev := time.Duration(0)
	for i, r := range rtx {
		want := min(2*prev, 120*time.Second)
		if i == 0 {
			want = time.Second
		}
		if i == 1 { // the tail-loss probe and the first RTO both wait 1 s
			want = time.Second
		}
		if r.Interval != want {
			t.Errorf("retransmission %d after %v, want %v", i+1, r.Interval, want)
		}
		prev = r.Interval
	}
	at := rep.ErrnoAt - rep.Anchor
	if at != 1088*time.Second {
		t.Errorf("ETIMEDOUT %v after the request, want 1088s (FACTS.md)", at)
	}
	if rep.Wall.Speedup < 1000 {
		t.Logf("speed-up only %.0fx", rep.Wall.Speedup)
	}
}

// TestVirtualDeterministic: the same parameters and seed give a
// byte-identical JSON report once the wall-clock section is removed.
func TestVirtualDeterministic(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values map[string]string
	}{
		{"loss", nil},
		{"brief-outage", map[string]string{"outage": "3s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			render := func(seed uint64) []byte {
				rep := runVirtual(t, tc.name, tc.values, Options{Seed: seed, LinkDelay: 20 * time.Millisecond})
				rep.Wall = Wall{}
				var b bytes.Buffer
				if err := rep.WriteJSON(&b); err != nil {
					t.Fatal(err)
				}
				return b.Bytes()
			}
			a, b := render(7), render(7)
			if !bytes.Equal(a, b) {
				t.Fatalf("two runs with seed 7 differ:\n%s\n----\n%s", a, b)
			}
			if tc.name == "loss" && bytes.Equal(a, render(8)) {
				t.Fatal("a different seed gave the same loss run")
			}
		})
	}
}

// TestVirtualCatalog runs every scenario that does not need the kernel on
// the virtual clock and checks it met its expectation.
func TestVirtualCatalog(t *testing.T) {
	for _, sc := range Catalog() {
		if sc.Kernel {
			continue
		}
		t.Run(sc.Name, func(t *testing.T) {
			rep := runVirtual(t, sc.Name, nil, Options{})
			if rep.Verdict != "pass" {
				var b strings.Builder
				rep.WriteTable(&b)
				t.Fatalf("verdict %s:\n%s", rep.Verdict, b.String())
			}
		})
	}
}

// BenchmarkVirtualSpeed reports simulated seconds per wall second for whole
// virtual-clock scenario runs (the target: ≥ 10 000×).
func BenchmarkVirtualSpeed(b *testing.B) {
	for _, tc := range []struct {
		name   string
		values map[string]string
	}{
		{"timeout", map[string]string{"retries2": "15"}},
		{"loss", nil},
	} {
		b.Run(tc.name, func(b *testing.B) {
			sc, _ := Lookup(tc.name)
			p, err := ParseParams(sc, tc.values)
			if err != nil {
				b.Fatal(err)
			}
			var simulated time.Duration
			start := time.Now()
			for b.Loop() {
				rep, err := Run(context.Background(), tc.name, p, Options{Clock: ClockVirtual})
				if err != nil {
					b.Fatal(err)
				}
				simulated += rep.Duration
			}
			b.ReportMetric(simulated.Seconds()/time.Since(start).Seconds(), "sim-s/wall-s")
		})
	}
}

// TestVirtualZeroWindowExact: on the virtual clock the window-probe count
// is exact — one number, no ±1 — for link delays from 0 to 30 ms and
// watch times that end between probes or just after one (1.25 s: the
// third probe at 1.41 s falls after the outcome with 1 ms but before it
// with 30 ms), because the theory starts gVisor's persist timer when the
// zero-window ACK reached the client, at the RTO it had then; a round trip
// the fill loop cannot tell from a closed window is refused in one line.
func TestVirtualZeroWindowExact(t *testing.T) {
	for _, tc := range []struct {
		delay  time.Duration
		watch  string
		probes float64
	}{
		{0, "2s", 3},
		{time.Millisecond, "1250ms", 2},
		{10 * time.Millisecond, "5s", 4},
		{30 * time.Millisecond, "1250ms", 3},
		{30 * time.Millisecond, "2s", 3},
	} {
		t.Run(fmt.Sprintf("%v/%s", tc.delay, tc.watch), func(t *testing.T) {
			rep := runVirtual(t, "zero-window", map[string]string{"watch": tc.watch}, Options{LinkDelay: tc.delay})
			e, ok := rep.Expectation("window probes")
			if !ok || e.Want == nil || e.Min == nil || e.Max == nil || e.Got == nil {
				t.Fatalf("no numeric window probes row: %+v", rep.Expectations)
			}
			if *e.Min != *e.Max || *e.Want != tc.probes || *e.Got != tc.probes || !e.Pass {
				t.Errorf("window probes: theory %s (%v–%v), measured %v, want exactly %v:\n%s", e.Theory, *e.Min, *e.Max, *e.Got, tc.probes, e.Basis)
			}
		})
	}
	sc, _ := Lookup("zero-window")
	p, _ := ParseParams(sc, nil)
	_, err := Run(context.Background(), "zero-window", p, Options{Clock: ClockVirtual, LinkDelay: 50 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "use a --link-delay below") {
		t.Errorf("50 ms link delay: %v, want the round-trip refusal", err)
	}
}
