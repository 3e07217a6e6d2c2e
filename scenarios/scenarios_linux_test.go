package scenarios

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/internal/capture"
)

// safetyTimeout bounds a scenario run in tests; it guards against hangs
// and is never asserted on.
const safetyTimeout = 90 * time.Second

// requireNamespaces skips tests that build private network namespaces with
// a TUN device when this machine cannot.
func requireNamespaces(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and TUN devices")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun on this machine")
	}
}

// realCases run every catalog scenario, most with small parameters, some
// in a second variant. Expectations are computed from the parameters.
var realCases = []struct {
	name, scenario string
	params         map[string]string
}{
	{"timeout/retries2", "timeout", map[string]string{"retries2": "2"}},
	{"timeout/user-timeout", "timeout", map[string]string{"user-timeout": "1s"}},
	{"brief-outage", "brief-outage", map[string]string{"outage": "1s"}},
	{"sendbuf-full", "sendbuf-full", map[string]string{"user-timeout": "1s"}},
	{"idle-outage", "idle-outage", map[string]string{"outage": "1s"}},
	{"keepalive", "keepalive", nil},
	{"syn-timeout/classic", "syn-timeout", nil},
	{"syn-timeout/linear", "syn-timeout", map[string]string{"linear-timeouts": "4"}},
	{"syn-timeout/late", "syn-timeout", map[string]string{"syn-retries": "3", "outage": "2s"}},
	{"half-open", "half-open", map[string]string{"outage": "1s"}},
	{"zero-window/probes", "zero-window", map[string]string{"watch": "2s"}},
	{"zero-window/user-timeout", "zero-window", map[string]string{"watch": "4s", "outage": "3s", "user-timeout": "1s"}},
	{"peer-retransmit", "peer-retransmit", map[string]string{"peer-timeout": "2s"}},
	{"loss", "loss", map[string]string{"requests": "5", "size": "64KiB"}},
}

// TestScenarios runs every scenario on the real kernel, each in its own
// private namespace, in parallel, and checks the outcome and every
// expectation that does not depend on wall-clock precision: retransmission
// counts, backoff ratios, probes, bytes, errno sequences.
func TestScenarios(t *testing.T) {
	requireNamespaces(t)
	schema := loadSchema(t)
	covered := map[string]bool{}
	for _, tc := range realCases {
		covered[tc.scenario] = true
	}
	for _, name := range Names() {
		if !covered[name] {
			t.Errorf("scenario %s is not exercised", name)
		}
	}
	for _, tc := range realCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rep := runReal(t, tc.scenario, tc.params, Options{Seed: 1})
			checkRealReport(t, rep, schema)
		})
	}
}

// runReal runs a scenario with the given parameters and fails the test if
// it could not.
func runReal(t *testing.T, name string, params map[string]string, opts Options) *Report {
	t.Helper()
	sc, _ := Lookup(name)
	p, err := ParseParams(sc, params)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
	defer cancel()
	rep, err := Run(ctx, name, p, opts)
	if err != nil {
		if rep != nil {
			var b bytes.Buffer
			rep.WriteTable(&b)
			t.Logf("report:\n%s", b.String())
		}
		t.Fatalf("Run(%s): %v", name, err)
	}
	return rep
}

// checkRealReport asserts the outcome and the non-timing expectations, and
// that the report renders in all three forms (and matches the JSON schema,
// when given).
func checkRealReport(t *testing.T, rep *Report, schema map[string]map[string]schemaField) {
	t.Helper()
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	failed := false
	if rep.Outcome != rep.Expected || rep.Client != "kernel" || rep.Clock != ClockReal {
		t.Errorf("outcome %q, theory %q", rep.Outcome, rep.Expected)
		failed = true
	}
	for _, e := range rep.Expectations {
		if e.Timing || e.Pass {
			continue
		}
		if raceEnabled && e.Unit == "ratio" {
			// Packet timestamps lag under the race detector; see race_test.go.
			t.Logf("race detector: not asserting %q: theory %s, measured %s", e.Name, e.Theory, e.Measured)
			continue
		}
		t.Errorf("expectation %q: theory %s, measured %s", e.Name, e.Theory, e.Measured)
		failed = true
	}
	if met, err := rep.Met(rep.Expected); err != nil || !met {
		t.Errorf("Met(%q) = %v, %v", rep.Expected, met, err)
	}
	if failed {
		t.Logf("report:\n%s", table.String())
	}
	if schema != nil {
		checkSchema(t, decodeReport(t, rep), schema)
	}
	var svg bytes.Buffer
	if err := rep.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	classes, _ := svgElements(t, svg.Bytes())
	if rep.Packets.Total > 0 && classes["sent"]+classes["retransmit"]+classes["probe"] == 0 {
		t.Errorf("the graph of %d packets has no marks: %v", rep.Packets.Total, classes)
	}
	for _, w := range rep.Faults {
		if w.Outage && classes["outage"] == 0 {
			t.Error("an outage is not shaded")
		}
	}
}

// TestScenarioCapture checks that --pcap captures what the report counts.
func TestScenarioCapture(t *testing.T) {
	requireNamespaces(t)
	t.Parallel()
	path := filepath.Join(t.TempDir(), "timeout.pcapng")
	rep := runReal(t, "timeout", map[string]string{"user-timeout": "500ms"}, Options{PcapPath: path})
	recs, err := capture.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, dropped := len(recs), 0
	for _, rec := range recs {
		if strings.Contains(rec.Comment, "dropped by rule") {
			dropped++
		}
	}
	// The capture may hold a few teardown packets more than the report.
	if n < rep.Packets.Total || dropped < rep.Packets.DroppedIn+rep.Packets.DroppedOut || n-rep.Packets.Total != dropped-rep.Packets.DroppedIn-rep.Packets.DroppedOut {
		t.Errorf("capture: %d packets, %d dropped; report: %d packets, %d dropped", n, dropped, rep.Packets.Total, rep.Packets.DroppedIn+rep.Packets.DroppedOut)
	}
}

// TestScenarioCancel checks that cancelling a run wakes the blocked client
// and tears everything down, with a report saying it was interrupted.
func TestScenarioCancel(t *testing.T) {
	requireNamespaces(t)
	t.Parallel()
	sc, _ := Lookup("keepalive")
	p, err := ParseParams(sc, map[string]string{"idle": "1h"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	progress := &cancelWriter{cancel: cancel}
	// The progress line shows after two seconds; its first write cancels
	// the run while recv is blocked.
	rep, err := Run(ctx, "keepalive", p, Options{Progress: progress})
	if err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want an error wrapping context.Canceled", err)
	}
	if rep == nil || rep.Verdict != VerdictError || !strings.Contains(rep.Error, "interrupted") {
		t.Fatalf("report = %+v", rep)
	}
	if !strings.Contains(progress.first, "keepalive: ") || !strings.Contains(progress.first, "ETIMEDOUT expected in ~") {
		t.Errorf("progress line %q", progress.first)
	}
}

// cancelWriter cancels a context on its first write and keeps that write.
type cancelWriter struct {
	cancel func()
	first  string
}

func (w *cancelWriter) Write(p []byte) (int, error) {
	if w.first == "" {
		w.first = string(p)
		w.cancel()
	}
	return len(p), nil
}
