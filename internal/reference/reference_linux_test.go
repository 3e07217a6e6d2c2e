package reference

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/scenarios"
)

// refRuns is how many times TestReference runs each side of each
// scenario; the README's table comes from -reference.runs 20.
var refRuns = flag.Int("reference.runs", 1, "runs per scenario and side in TestReference")

// refScenario restricts TestReference to one scenario.
var refScenario = flag.String("reference.scenario", "", "run TestReference for this scenario only")

// refParams overrides scenario parameters in TestReference:
// "retries2=3,user-timeout=0s".
var refParams = flag.String("reference.params", "", "NAME=VALUE,... parameters for TestReference's scenario (with -reference.scenario)")

// refStrict makes TestReference assert the timing rows too.
var refStrict = flag.Bool("reference.strict", false, "also fail TestReference when a time is outside its tolerance")

// refOut, if set, gets one JSON line per run: both series and whether they
// agree (for the README's table).
var refOut = flag.String("reference.out", "", "append one JSON line per TestReference run to this file")

// record appends one run to -reference.out.
func record(t *testing.T, name string, run int, ref, got Series, rows []Row) {
	if *refOut == "" {
		return
	}
	f, err := os.OpenFile(*refOut, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	line, _ := json.Marshal(map[string]any{"scenario": name, "run": run, "reference": ref, "unplug": got, "agree": Agree(rows), "rows": rows})
	f.Write(append(line, '\n'))
}

// newLab skips without root, ip or iptables, and removes the lab in
// t.Cleanup.
func newLab(t *testing.T) *Lab {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun on this machine")
	}
	lab, err := NewLab(context.Background(), "unplug-ref")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Error(err)
		}
		for _, ns := range []string{lab.Client, lab.Server} {
			if _, err := os.Stat("/run/netns/" + ns); err == nil {
				t.Errorf("namespace %s left behind", ns)
			}
		}
	})
	return lab
}

// TestReference runs each covered scenario the seed's way (two namespaces,
// iptables DROP in the server's) and with unplug (scenarios.Run, the same
// code as `unplug run SCENARIO --json`) and requires the same mechanism —
// outcome, errnos, how many retransmissions or probes and which kinds. Every
// firing and the outcome are compared within the timer-wheel tolerance and
// logged; they fail the test only with -reference.strict, since a loaded
// machine delays timestamps (like every timing row in this project).
func TestReference(t *testing.T) {
	lab := newLab(t)
	for _, name := range Scenarios {
		if *refScenario != "" && name != *refScenario {
			continue
		}
		t.Run(name, func(t *testing.T) {
			sc, _ := scenarios.Lookup(name)
			values := map[string]string{}
			for _, kv := range strings.Split(*refParams, ",") {
				if k, v, ok := strings.Cut(kv, "="); ok {
					values[k] = v
				}
			}
			params, err := scenarios.ParseParams(sc, values)
			if err != nil {
				t.Fatal(err)
			}
			for i := range *refRuns {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				ref, err := lab.Run(ctx, name, params)
				cancel()
				if err != nil {
					t.Fatalf("reference run: %v", err)
				}
				ctx, cancel = context.WithTimeout(context.Background(), 2*time.Minute)
				rep, err := scenarios.Run(ctx, name, params, scenarios.Options{Seed: 1})
				cancel()
				if err != nil {
					t.Fatalf("unplug run: %v", err)
				}
				got := FromReport(rep)
				rows := Compare(ref, got)
				record(t, name, i+1, ref, got, rows)
				t.Logf("run %d: reference rtt %s rto %s\n%s", i+1, ref.RTT, ref.RTO, FormatRows(rows))
				switch {
				case !SameMechanism(rows):
					t.Errorf("run %d: unplug's mechanism differs from the iptables reference", i+1)
				case !Agree(rows) && *refStrict:
					t.Errorf("run %d: a time is outside its tolerance (-reference.strict)", i+1)
				case !Agree(rows):
					t.Logf("run %d: a time is outside its tolerance (machine load; not asserted without -reference.strict)", i+1)
				}
			}
		})
	}
}

// TestReferenceSysctlMatters shows the comparison can fail: the reference
// with tcp_retries2=5 against unplug with the default ends at a later
// firing.
func TestReferenceSysctlMatters(t *testing.T) {
	lab := newLab(t)
	sc, _ := scenarios.Lookup("timeout")
	wrong, err := scenarios.ParseParams(sc, map[string]string{"retries2": "5"})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := lab.Run(context.Background(), "timeout", wrong)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := scenarios.Run(context.Background(), "timeout", scenarios.DefaultParams(sc), scenarios.Options{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	rows := Compare(ref, FromReport(rep))
	if SameMechanism(rows) {
		t.Fatalf("retries2=5 against the default %d had the same mechanism:\n%s", scenarios.DefaultParams(sc).Int("retries2"), FormatRows(rows))
	}
	t.Logf("disagrees as it must:\n%s", FormatRows(rows))
}
