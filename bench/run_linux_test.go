package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestRunQuick runs every measurement once with tiny sizes: the CI smoke of
// `unplug bench`. It asserts that each row was measured (or skipped with a
// reason) and that the counts behind the idle-connection row hold, never
// how fast anything was.
func TestRunQuick(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*safetyTimeout)
	defer cancel()
	var progress bytes.Buffer
	rep, err := Run(ctx, Options{
		Quick:     true,
		Duration:  100 * time.Millisecond,
		Rounds:    1,
		PingPongs: 50,
		Conns:     64,
		Starts:    1,
		Progress:  &progress,
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := AllRows
	if len(rep.Rows) != len(want) {
		t.Fatalf("got %d rows, want %v", len(rep.Rows), want)
	}
	for i, row := range rep.Rows {
		if row.Name != want[i] {
			t.Errorf("row %d is %q, want %q", i, row.Name, want[i])
		}
		switch {
		case row.Error != "" && row.Status == StatusSkip && (row.Name == RowIperf || strings.HasPrefix(row.Name, "forward-")):
			t.Logf("%s skipped: %s", row.Name, row.Error)
		case row.Error != "":
			t.Errorf("%s: %s", row.Name, row.Error)
		case row.Unplug <= 0:
			t.Errorf("%s: measured %v", row.Name, row.Unplug)
		case row.Status == "":
			t.Errorf("%s: no status", row.Name)
		}
	}
	if conns := rep.Row(RowConns); conns != nil && !strings.Contains(conns.Note, "64 held, 0 failed") {
		t.Errorf("idle connections: %s", conns.Note)
	}
	if !strings.Contains(progress.String(), "bench: bulk transfer") {
		t.Errorf("no progress lines: %q", progress.String())
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, row := range rep.Rows {
		if !strings.Contains(table.String(), row.Metric) {
			t.Errorf("table lacks %q:\n%s", row.Metric, table.String())
		}
	}
	t.Logf("\n%s", table.String())
}

// TestRunOnly runs a single row.
func TestRunOnly(t *testing.T) {
	requireRoot(t)
	rep, err := Run(context.Background(), Options{Quick: true, Only: []string{RowVirtual}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 1 || rep.Rows[0].Name != RowVirtual {
		t.Fatalf("rows %+v, want only %s", rep.Rows, RowVirtual)
	}
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatalf("JSON does not read back: %v\n%s", err, buf.String())
	}
	if back.Cores == 0 || back.Rows[0].Name != RowVirtual || back.Rows[0].Unplug != rep.Rows[0].Unplug {
		t.Fatalf("JSON round trip: %+v", back)
	}
}

// TestRunCancelled stops at once with the context's error.
func TestRunCancelled(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Run(ctx, Options{Quick: true, Only: []string{RowBulk}}); err == nil {
		t.Fatal("Run with a cancelled context succeeded")
	}
}

// TestForwardRows builds unplug and toxiproxy-server (a tool dependency of
// this module) and runs the forwarding comparison once with tiny sizes: every
// row measured, both forwarders' CPU read, nothing left running. How fast
// either one was is the benchmark's business, not the test's.
func TestForwardRows(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the go command to build the forwarders")
	}
	dir := t.TempDir()
	for _, b := range []struct{ out, pkg string }{
		{"unplug", "github.com/unplug-dev/unplug/cmd/unplug"},
		{"toxiproxy-server", "github.com/Shopify/toxiproxy/v2/cmd/server"},
	} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, b.out), b.pkg).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", b.pkg, err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*safetyTimeout)
	defer cancel()
	rep, err := Run(ctx, Options{
		Quick: true, Duration: 200 * time.Millisecond, Rounds: 1, PingPongs: 50,
		ServeCommand: []string{filepath.Join(dir, "unplug"), "serve"},
		Toxiproxy:    filepath.Join(dir, "toxiproxy-server"),
		Only:         []string{RowForwardUp, RowForwardDown, RowForwardRTT},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 3 {
		t.Fatalf("rows %+v, want the three forwarding rows", rep.Rows)
	}
	for _, row := range rep.Rows {
		if row.Error != "" || row.Unplug <= 0 || row.Baseline <= 0 || row.Ratio <= 0 {
			t.Errorf("%s: unplug %v, toxiproxy %v, error %q", row.Name, row.Unplug, row.Baseline, row.Error)
		}
		if row.Name != RowForwardRTT && !strings.Contains(row.Note, "s/GB") {
			t.Errorf("%s: no CPU per GB in %q", row.Name, row.Note)
		}
	}
	var table bytes.Buffer
	rep.WriteTable(&table)
	t.Logf("\n%s", table.String())
	// The round-trip row alone: measured without the bulk rows, both p99s
	// in its note.
	rep, err = Run(ctx, Options{
		Quick: true, Rounds: 1, PingPongs: 50,
		ServeCommand: []string{filepath.Join(dir, "unplug"), "serve"},
		Toxiproxy:    filepath.Join(dir, "toxiproxy-server"),
		Only:         []string{RowForwardRTT},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 1 || rep.Rows[0].Name != RowForwardRTT {
		t.Fatalf("rows %+v, want the round-trip row alone", rep.Rows)
	}
	if row := rep.Rows[0]; row.Error != "" || row.Unplug <= 0 || row.Baseline <= 0 || !regexp.MustCompile(`p99 unplug [0-9.]+ µs, toxiproxy [0-9.]+ µs`).MatchString(row.Note) {
		t.Errorf("%s: unplug %v, toxiproxy %v, error %q, note %q (want both p99s)", row.Name, row.Unplug, row.Baseline, row.Error, row.Note)
	}
	for _, marker := range []string{"unplug-bench-fwd-"} {
		if pid, err := findProcess(marker); err == nil {
			t.Errorf("a forwarder (pid %d) is still running", pid)
		}
	}
}
