package scenarios

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// Theory is what a scenario predicts for given parameters: the outcome, when
// it happens (counted from the report's anchor), and checks on measured
// values. Scenario.Expect computes it from the parameters and FACTS.md.
type Theory struct {
	Outcome string
	// At is when the outcome is expected, after the anchor; 0 if the
	// theory does not predict a time.
	At time.Duration
	// AtBasis says where At comes from.
	AtBasis string
	// AtLo and AtHi, when AtHi is set, are the accepted range for the
	// outcome's time: the model's range over timer phases, widened by the
	// run's tolerance (Conditions.tolerance). Otherwise timeTolerance(At).
	AtLo, AtHi time.Duration
	Checks     []Check
}

// Check is one expectation on a measured value: Want is the theory's value,
// [Min, Max] the accepted range. Timing checks depend on timer precision
// and machine load: the report shows them; tests do not assert them.
type Check struct {
	Name     string
	Unit     string // "s", "count", "ratio", "bytes", "B/s" or ""
	Want     float64
	Min, Max float64
	Timing   bool
	Basis    string
	// TheoryText, when set, is shown instead of Want and the range.
	TheoryText string
	measure    func(r *Report) (float64, bool)
	// explain, when set, says in words what was measured (got is what
	// measure returned).
	explain func(r *Report, got float64) string
}

// inf is an unbounded Max.
var inf = math.Inf(1)

// timeTolerance is the accepted deviation of a predicted time: 20% plus
// 300 ms, since timers, scheduling and the TUN add latency.
func timeTolerance(want time.Duration) (lo, hi time.Duration) {
	slack := want/5 + 300*time.Millisecond
	return max(want-slack, 0), want + slack
}

// evaluate fills in the expectation rows and the verdict of rep.
func (th Theory) evaluate(rep *Report) {
	rep.Expected = th.Outcome
	rows := []Expectation{{
		Name: "outcome", Theory: th.Outcome, Measured: orNone(rep.Outcome),
		Pass: strings.EqualFold(th.Outcome, rep.Outcome), Basis: rep.Description,
	}}
	if th.At > 0 {
		lo, hi := timeTolerance(th.At)
		if th.AtHi > 0 {
			lo, hi = th.AtLo, th.AtHi
		}
		c := Check{
			Name: "time to " + th.Outcome, Unit: "s", Timing: true, Basis: th.AtBasis,
			Want: th.At.Seconds(), Min: lo.Seconds(), Max: hi.Seconds(),
			measure: func(r *Report) (float64, bool) {
				if !strings.EqualFold(r.Outcome, th.Outcome) {
					return 0, false
				}
				return (r.OutcomeAt - r.Anchor).Seconds(), true
			},
		}
		rows = append(rows, c.row(rep))
	}
	for _, c := range th.Checks {
		rows = append(rows, c.row(rep))
	}
	rep.Expectations = rows
	switch {
	case rep.Error != "":
		rep.Verdict = VerdictError
	default:
		rep.Verdict = VerdictPass
		for _, e := range rows {
			if !e.Pass {
				rep.Verdict = VerdictFail
			}
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// row measures c on rep.
func (c Check) row(rep *Report) Expectation {
	want, lo, hi := c.Want, c.Min, c.Max
	e := Expectation{
		Name: c.Name, Unit: c.Unit, Timing: c.Timing, Basis: c.Basis,
		Want: &want, Min: &lo,
		Theory:   formatValue(c.Want, c.Unit),
		Measured: "(not measured)",
	}
	if !math.IsInf(hi, 1) {
		e.Max = &hi // JSON has no infinity: no max means unbounded
	}
	if c.Min != c.Max || c.Min != c.Want {
		e.Theory += " (" + formatRange(c.Min, c.Max, c.Unit) + ")"
	}
	if c.TheoryText != "" {
		e.Theory = c.TheoryText
	}
	if c.measure == nil {
		return e
	}
	got, ok := c.measure(rep)
	if !ok {
		return e
	}
	e.Got = &got
	e.Measured = formatValue(got, c.Unit)
	if c.explain != nil {
		e.Measured = c.explain(rep, got)
	}
	e.Pass = got >= c.Min-1e-9 && got <= c.Max+1e-9
	return e
}

// formatValue prints v in its unit.
func formatValue(v float64, unit string) string {
	switch unit {
	case "s":
		return fmt.Sprintf("%.3f s", v)
	case "ratio":
		return fmt.Sprintf("%.2f", v)
	case "bytes":
		return formatBytes(v)
	case "B/s":
		return formatBytes(v) + "/s"
	}
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

func formatRange(lo, hi float64, unit string) string {
	switch {
	case math.IsInf(hi, 1):
		return "≥ " + formatValue(lo, unit)
	case lo == hi:
		return "exactly " + formatValue(lo, unit)
	}
	return formatValue(lo, unit) + " – " + formatValue(hi, unit)
}

func formatBytes(v float64) string {
	switch {
	case v >= 1<<20:
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case v >= 1<<10:
		return fmt.Sprintf("%.1f KiB", v/(1<<10))
	}
	return fmt.Sprintf("%.0f B", v)
}

// measured checks a measurement the scenario recorded with Recorder.Measure.
func measured(name, unit string, want, lo, hi float64, timing bool, basis string) Check {
	return Check{Name: name, Unit: unit, Want: want, Min: lo, Max: hi, Timing: timing, Basis: basis,
		measure: func(r *Report) (float64, bool) {
			m, ok := r.Measurement(name)
			return m.Value, ok
		}}
}

// kindIn reports whether kind is in the comma-separated list kinds.
func kindIn(kind, kinds string) bool {
	for _, k := range strings.Split(kinds, ",") {
		if k == kind {
			return true
		}
	}
	return false
}

// countCheck counts retransmissions (kind "retransmit") or probes
// ("keepalive-probe", "zero-window-probe"; kinds is a comma-separated
// list) in direction dir.
func countCheck(name, dir, kinds string, want, lo, hi int, basis string) Check {
	return Check{Name: name, Unit: "count", Want: float64(want), Min: float64(lo), Max: float64(hi), Basis: basis,
		measure: func(r *Report) (float64, bool) {
			n := 0
			for _, x := range r.Retransmissions {
				if x.Dir == dir && kindIn(x.Kind, kinds) {
					n++
				}
			}
			return float64(n), true
		}}
}

// backoffCheck measures the backoff ratio: the median ratio between
// successive intervals of the longest retransmission (or probe) series in
// direction dir, ignoring its first skip ratios (a tail-loss probe that
// precedes the first RTO, for instance).
//
// A ratio of intervals depends on timing (a packet the fault layer's reader
// sees late makes one interval long and the next short), so the row is a
// timing row: shown, not asserted by tests.
func backoffCheck(name, dir, kinds string, skip int, want, lo, hi float64, basis string) Check {
	return Check{Name: name, Unit: "ratio", Want: want, Min: lo, Max: hi, Basis: basis, Timing: true,
		measure: func(r *Report) (float64, bool) {
			ratios := seriesRatios(r, dir, kinds)
			if len(ratios) > skip {
				ratios = ratios[skip:]
			} else {
				return 0, false
			}
			return median(ratios), true
		}}
}

// looseRatioLo and looseRatioHi are the range a backoff ratio row keeps
// where the model does not bound its steps (a step clamped to a user
// timeout or to gVisor's 120 s cap).
const looseRatioLo, looseRatioHi = 1.6, 2.5

// backoffBounds is the range of backoffCheck's median when the timer's
// n-th packet of a series follows the one before it after an interval
// within iv[n-1] (iv[0]: from the original send to the first
// retransmission), each interval read from the packets' times within
// ±tol, and between nLo and nHi packets are seen. Ratio n (n ≥ 2) then
// lies within [(iv[n-1].lo−tol)/(iv[n-2].hi+tol),
// (iv[n-1].hi+tol)/(iv[n-2].lo−tol)]; a median is monotone in each of its
// values, so it lies between the medians of those bounds. ok is false
// when no count in the range leaves a ratio after the first skip.
func backoffBounds(iv []span, tol time.Duration, skip, nLo, nHi int) (lo, hi float64, ok bool) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for n := max(nLo, skip+2); n <= min(nHi, len(iv)); n++ {
		var los, his []float64
		for i := 1 + skip; i < n; i++ {
			prev, cur := iv[i-1], iv[i]
			los = append(los, float64(cur.lo-tol)/float64(prev.hi+tol))
			his = append(his, float64(cur.hi+tol)/float64(max(prev.lo-tol, time.Millisecond)))
		}
		lo, hi, ok = min(lo, median(los)), max(hi, median(his)), true
	}
	if ok {
		// Shown with two decimals: round outwards so that what the
		// table shows is what is checked.
		lo, hi = math.Floor(lo*100)/100, math.Ceil(hi*100)/100
	}
	return lo, hi, ok
}

// boundedBackoffCheck is a backoff row whose range is what the intervals
// iv a timer model allows give within the run's tolerance
// (backoffBounds), the first skip ratios left out; how says where iv
// comes from. With no ratio left to bound it keeps the loose range.
func boundedBackoffCheck(name, dir, kinds string, skip int, iv []span, c Conditions, nLo, nHi int, why, how string) Check {
	tol := c.tolerance()
	lo, hi, ok := backoffBounds(iv, tol, skip, nLo, nHi)
	if !ok {
		return backoffCheck(name, dir, kinds, skip, 2, looseRatioLo, looseRatioHi, why)
	}
	return backoffCheck(name, dir, kinds, skip, 2, lo, hi,
		fmt.Sprintf("%s; %s, each interval ± %s (%s)", why, how, fmtDur(tol), c.describeClient()))
}

// kernelBackoffCheck is boundedBackoffCheck for a kernel timer re-armed
// at each firing for the next of steps (timerIntervals), whose packets
// the client sends.
func kernelBackoffCheck(name, kinds string, skip int, steps []time.Duration, c Conditions, nLo, nHi int, why string) Check {
	return boundedBackoffCheck(name, "in", kinds, skip, kernelClock{hz: c.hz()}.timerIntervals(steps), c, nLo, nHi, why,
		fmt.Sprintf("each step rounded up by the timer wheel and up to %d jiffies late (HZ %d)", timerLate, c.hz()))
}

// seriesRatios returns the ratios (from the second retransmission on) of
// the longest series of retransmissions of one segment in direction dir,
// among the kinds listed.
func seriesRatios(r *Report, dir, kinds string) []float64 {
	type key struct {
		conn int
		seq  uint32
	}
	series := map[key][]Retransmission{}
	var order []key
	for _, x := range r.Retransmissions {
		if x.Dir != dir || !kindIn(x.Kind, kinds) {
			continue
		}
		k := key{x.Conn, x.Seq}
		if _, ok := series[k]; !ok {
			order = append(order, k)
		}
		series[k] = append(series[k], x)
	}
	var best []Retransmission
	for _, k := range order {
		if len(series[k]) > len(best) {
			best = series[k]
		}
	}
	var ratios []float64
	for _, x := range best {
		if x.N >= 2 && x.Ratio > 0 {
			ratios = append(ratios, x.Ratio)
		}
	}
	return ratios
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// reportCheck measures something computed from the whole report.
func reportCheck(name, unit string, want, lo, hi float64, basis string, f func(r *Report) (float64, bool)) Check {
	return Check{Name: name, Unit: unit, Want: want, Min: lo, Max: hi, Basis: basis, measure: f}
}
