package scenarios

import (
	"testing"
	"time"
)

func TestCatalog(t *testing.T) {
	want := []string{"timeout", "brief-outage", "sendbuf-full", "idle-outage", "keepalive", "syn-timeout", "half-open", "zero-window", "peer-retransmit", "loss"}
	names := Names()
	if len(names) != len(want) {
		t.Fatalf("catalog %v, want %v", names, want)
	}
	for i, sc := range Catalog() {
		if sc.Name != want[i] || names[i] != want[i] {
			t.Errorf("scenario %d is %s, want %s", i, sc.Name, want[i])
		}
		if got, ok := Lookup(sc.Name); !ok || got.Name != sc.Name {
			t.Errorf("Lookup(%s) failed", sc.Name)
		}
		if sc.Summary == "" || sc.Run == nil || sc.Expect == nil {
			t.Errorf("%s: incomplete", sc.Name)
		}
		for _, p := range sc.Params {
			if p.Help == "" || p.Kind == 0 || p.Default == "" {
				t.Errorf("%s --%s: missing help, kind or default", sc.Name, p.Name)
			}
		}
		// Defaults parse, respect their own bounds, and give a theory for
		// both clients that finishes in seconds.
		p, err := ParseParams(sc, nil)
		if err != nil {
			t.Errorf("%s: defaults: %v", sc.Name, err)
			continue
		}
		for _, kernel := range []bool{true, false} {
			th := sc.Expect(p, kernel)
			if th.Outcome == "" || ValidateExpect(th.Outcome) != nil {
				t.Errorf("%s (kernel %v): expected outcome %q is not a valid --expect", sc.Name, kernel, th.Outcome)
			}
			if kernel && th.At > 10*time.Second {
				t.Errorf("%s: the default takes %s; defaults must finish in seconds", sc.Name, th.At)
			}
			for _, c := range th.Checks {
				if c.measure == nil || c.Name == "" || c.Min > c.Max || c.Basis == "" {
					t.Errorf("%s: check %q is malformed", sc.Name, c.Name)
				}
			}
		}
	}
	if _, ok := Lookup("nope"); ok {
		t.Error("Lookup of an unknown name succeeded")
	}
	if sc, _ := Lookup("sendbuf-full"); !sc.Kernel {
		t.Error("sendbuf-full shows kernel behaviour and must be marked Kernel")
	}
}
