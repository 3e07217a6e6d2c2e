package scenarios

import (
	"fmt"
	"strings"
	"time"
)

// ExecExpect is one `unplug exec --expect` gate: Detect (every connection
// a fault hit noticed within Within: it ended with an error or a close, or
// recovered because the link came back) or Reconnected (after the fault, a
// new connection to the same upstream succeeded).
type ExecExpect struct {
	Raw         string
	Detect      bool
	Within      time.Duration
	Reconnected bool
}

// ParseExecExpect parses "detect<30s" or "reconnected"; the error is one
// line saying what is accepted.
func ParseExecExpect(s string) (ExecExpect, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	if v == "reconnected" {
		return ExecExpect{Raw: s, Reconnected: true}, nil
	}
	if d, ok := strings.CutPrefix(v, "detect<"); ok {
		within, err := time.ParseDuration(d)
		if err == nil && within > 0 {
			return ExecExpect{Raw: s, Detect: true, Within: within}, nil
		}
		return ExecExpect{}, fmt.Errorf("--expect %q: %q is not a positive duration; write e.g. detect<30s", s, d)
	}
	return ExecExpect{}, fmt.Errorf("--expect %q: use detect<DURATION (e.g. 'detect<30s': every connection a fault hit noticed within 30 s) or reconnected (a new connection to the same upstream succeeded after the fault)", s)
}

// evaluate adds one expectation row per gate and one theory row per
// connection the kernel timed out, and sets the verdict: pass when every
// row passes.
func (r *Report) evaluateExec(expects []ExecExpect) {
	for _, e := range expects {
		switch {
		case e.Detect:
			r.Expectations = append(r.Expectations, detectRow(r.Exec.Conns, e))
		case e.Reconnected:
			r.Expectations = append(r.Expectations, reconnectRow(r.Exec.Conns, e))
		}
	}
	for _, c := range r.Exec.Conns {
		if row, ok := timeoutRow(c); ok {
			r.Expectations = append(r.Expectations, row)
		}
	}
	r.Verdict = VerdictPass
	for _, e := range r.Expectations {
		if !e.Pass {
			r.Verdict = VerdictFail
		}
	}
}

func detectRow(conns []ConnReport, e ExecExpect) Expectation {
	row := Expectation{Name: e.Raw, Theory: fmt.Sprintf("every connection a fault hit ends or recovers within %s", shortSeconds(e.Within)), Pass: true,
		Basis: "ended: closed or reset by either side, refused, or timed out by the kernel; recovered: traffic passed both ways after the last drop"}
	var bad, good []string
	hit := 0
	for _, c := range conns {
		if c.FaultHit == nil {
			continue
		}
		hit++
		switch {
		case c.Noticed != nil && *c.Noticed < e.Within:
			good = append(good, fmt.Sprintf("c%d %s in %s", c.ID, c.End.How, shortSeconds(*c.Noticed)))
		case c.Recovered != nil && *c.Recovered-*c.FaultHit < e.Within:
			good = append(good, fmt.Sprintf("c%d recovered in %s", c.ID, shortSeconds(*c.Recovered-*c.FaultHit)))
		case c.Noticed != nil:
			bad = append(bad, fmt.Sprintf("c%d %s only after %s", c.ID, c.End.How, shortSeconds(*c.Noticed)))
		default:
			bad = append(bad, fmt.Sprintf("c%d %s after %s", c.ID, c.End.How, shortSeconds(c.End.At-*c.FaultHit)))
		}
	}
	switch {
	case hit == 0:
		row.Measured, row.Pass = "no connection was hit by a fault", false
	case len(bad) > 0:
		row.Measured, row.Pass = strings.Join(bad, "; "), false
	default:
		row.Measured = strings.Join(good, "; ")
	}
	return row
}

func reconnectRow(conns []ConnReport, e ExecExpect) Expectation {
	row := Expectation{Name: e.Raw, Theory: "a new connection to the same upstream succeeds after a fault hit one",
		Basis: "succeeded: handshake completed after the first drop and the upstream's data arrived"}
	var hitUp []string
	for _, a := range conns {
		if a.FaultHit == nil {
			continue
		}
		hitUp = append(hitUp, a.Peer)
		for _, b := range conns {
			if b.ID != a.ID && b.Peer == a.Peer && b.Established != nil && *b.Established > *a.FaultHit && b.BytesReceived > 0 {
				row.Pass = true
				row.Measured = fmt.Sprintf("c%d to %s after c%d was hit (established at %s)", b.ID, b.Peer, a.ID, seconds(*b.Established))
				return row
			}
		}
	}
	if len(hitUp) == 0 {
		row.Measured = "no connection was hit by a fault"
	} else {
		row.Measured = "no new connection succeeded to " + strings.Join(dedupe(hitUp), ", ")
	}
	return row
}

// timeoutRow compares a kernel timeout with the theory from the
// connection's own settings: the request's first dropped transmission to
// ETIMEDOUT for retransmissions, the last packet received to the reset for
// keepalive.
func timeoutRow(c ConnReport) (Expectation, bool) {
	var est Estimate
	var from time.Duration
	switch c.End.How {
	case EndTimeoutRetries, EndTimeoutUser:
		// Zero-window probes (a writer whose reader stopped) end by a
		// count of unanswered probes, not by the retransmission model.
		if c.FaultHit == nil || (c.Retransmits == 0 && c.Probes > 0) {
			return Expectation{}, false
		}
		est, from = c.InFlight, *c.FaultHit
	case EndTimeoutSyn:
		// connect() into the dead link: from its first SYN.
		if c.Connect == nil {
			return Expectation{}, false
		}
		est, from = *c.Connect, c.Opened
	case EndTimeoutKeep:
		if c.Idle == nil {
			return Expectation{}, false
		}
		est = *c.Idle
		if c.LastReceived == nil {
			return Expectation{}, false
		}
		from = *c.LastReceived
	default:
		return Expectation{}, false
	}
	got := c.End.At - from
	want, lo, hi, g := est.Want.Seconds(), est.Min.Seconds(), est.Max.Seconds(), got.Seconds()
	return Expectation{
		Name: fmt.Sprintf("c%d %s", c.ID, c.End.How), Theory: est.String(), Measured: shortSeconds(got),
		Pass: got >= est.Min && got <= est.Max, Timing: true, Unit: "s", Want: &want, Min: &lo, Max: &hi, Got: &g,
		Basis: "from its own settings: " + c.Theory,
	}, true
}

func dedupe(xs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}
