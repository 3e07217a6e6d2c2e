package scenarios

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// firstLosses returns, for a loss run, the client data segments (conn,
// seq, len) whose first transmission the fault layer dropped, and how many
// distinct segments there were.
func firstLosses(r *Report) (lost map[string]bool, segments int) {
	lost = map[string]bool{}
	seen := map[string]bool{}
	for _, ev := range r.Timeline {
		pk := ev.Packet
		if pk == nil || pk.Dir != "in" || pk.Len == 0 {
			continue
		}
		k := fmt.Sprintf("%d/%d/%d", pk.Conn, pk.Seq, pk.Len)
		if seen[k] {
			continue
		}
		seen[k] = true
		if pk.Verdict == "drop" {
			lost[k] = true
		}
	}
	return lost, len(seen)
}

// TestLossRealSameSeedSameLosses: with the Linux kernel as the sender, two
// runs with seed 1 send the same segments and lose the same ones; seed 2
// loses others. Every run passes its rows.
func TestLossRealSameSeedSameLosses(t *testing.T) {
	requireNamespaces(t)
	sc, _ := Lookup("loss")
	p, err := ParseParams(sc, map[string]string{"requests": "4"})
	if err != nil {
		t.Fatal(err)
	}
	run := func(seed uint64) *Report {
		ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
		defer cancel()
		rep, err := Run(ctx, "loss", p, Options{Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Verdict != VerdictPass {
			var b strings.Builder
			rep.WriteTable(&b)
			t.Fatalf("seed %d: verdict %s:\n%s", seed, rep.Verdict, b.String())
		}
		return rep
	}
	a, b, c := run(1), run(1), run(2)
	la, na := firstLosses(a)
	lb, nb := firstLosses(b)
	lc, _ := firstLosses(c)
	if na != nb {
		t.Errorf("the same upload was cut into %d segments once and %d the other time", na, nb)
	}
	if len(la) == 0 {
		t.Fatal("seed 1 lost no data segment")
	}
	for k := range la {
		if !lb[k] {
			t.Errorf("segment %s lost in one seed-1 run, not in the other", k)
		}
	}
	if len(la) != len(lb) {
		t.Errorf("seed 1 lost %d segments once and %d the other time", len(la), len(lb))
	}
	same := len(la) == len(lc)
	for k := range la {
		same = same && lc[k]
	}
	if same {
		t.Error("seeds 1 and 2 lost the same segments")
	}
	if !strings.Contains(a.OutcomeDetail, "Linux kernel") {
		t.Errorf("the outcome does not say whose TCP sends: %q", a.OutcomeDetail)
	}
}
