package bench

import (
	"bytes"
	"context"
	"encoding/json"
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
		case row.Error != "" && row.Status == StatusSkip && row.Name == RowIperf:
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
