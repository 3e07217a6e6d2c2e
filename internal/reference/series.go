package reference

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/unplug-dev/unplug/scenarios"
)

// Packet is one TCP segment on the link, as either side saw it: the
// reference's capture on the client's veth, or a report's timeline.
type Packet struct {
	T    time.Duration // since the run started
	Dir  string        // "in" (client → server) or "out"
	Kind string        // new, retransmit, keepalive-probe, zero-window-probe, other
	Seq  uint32        // relative to the sender's initial sequence number
	Len  int
}

// Series is what one run of a scenario did, reduced to what a reference
// comparison needs: the client's retransmissions or probes, the
// application's errnos and the outcome. Every time counts from T0, the
// last packet on the link before the first retransmission or probe (the
// original transmission of the request, the handshake's last ACK before
// an idle outage, the first SYN): the moment the link went silent.
type Series struct {
	// Source says who produced it: "iptables reference" or "unplug".
	Source string `json:"source"`
	// T0 is the series' origin, since the run started.
	T0 time.Duration `json:"t0_ns"`
	// Times are the client's retransmissions and probes, since T0.
	Times []time.Duration `json:"times_ns"`
	// Kinds are their kinds (retransmit, keepalive-probe...), in order.
	Kinds []string `json:"kinds"`
	// Outcome is an errno name or recovered / connected, OutcomeAt when
	// (since T0).
	Outcome   string        `json:"outcome"`
	OutcomeAt time.Duration `json:"outcome_ns"`
	// Errnos are every errno the application got, in order.
	Errnos []string `json:"errnos"`
	// Measurements are scenario-specific values both sides measure the
	// same way (sendbuf-full: "accepted at once" bytes, "blocked send" s).
	Measurements map[string]float64 `json:"measurements,omitempty"`
	// RTT and RTO are the client socket's tcpi_rtt and tcpi_rto just
	// before the outage (0 if unknown: syn-timeout has no connection yet).
	RTT time.Duration `json:"rtt_ns,omitempty"`
	RTO time.Duration `json:"rto_ns,omitempty"`
}

// isProbeOrRetransmit reports whether a client segment of this kind is
// part of a series.
func isProbeOrRetransmit(kind string) bool {
	switch kind {
	case "retransmit", "keepalive-probe", "zero-window-probe":
		return true
	}
	return false
}

// seriesOf fills s.T0, s.Times and s.Kinds from the packets in link order.
func (s *Series) seriesOf(pkts []Packet) {
	first := -1
	for i, p := range pkts {
		if p.Dir == "in" && isProbeOrRetransmit(p.Kind) {
			first = i
			break
		}
	}
	if first < 0 {
		if len(pkts) > 0 {
			s.T0 = pkts[len(pkts)-1].T
		}
		return
	}
	if first > 0 {
		s.T0 = pkts[first-1].T
	} else {
		s.T0 = pkts[0].T
	}
	for _, p := range pkts[first:] {
		if p.Dir == "in" && isProbeOrRetransmit(p.Kind) {
			s.Times = append(s.Times, p.T-s.T0)
			s.Kinds = append(s.Kinds, p.Kind)
		}
	}
}

// FromReport reduces an unplug report (real or virtual clock) to a Series,
// with the same definitions the reference uses.
func FromReport(r *scenarios.Report) Series {
	s := Series{Source: "unplug", Outcome: r.Outcome, Measurements: map[string]float64{}}
	var pkts []Packet
	for _, ev := range r.Timeline {
		if p := ev.Packet; p != nil && p.Proto == "tcp" && p.Kind != "injected" {
			pkts = append(pkts, Packet{T: ev.T, Dir: p.Dir, Kind: p.Kind, Seq: p.Seq, Len: p.Len})
		}
	}
	s.seriesOf(pkts)
	s.OutcomeAt = r.OutcomeAt - s.T0
	if ci := r.ClientInfo; ci != nil {
		s.RTT, s.RTO = ci.RTT, ci.RTO
	}
	for _, e := range r.AppErrors {
		s.Errnos = append(s.Errnos, e.Errno)
	}
	for _, name := range measuredNames {
		if m, ok := r.Measurement(name); ok {
			s.Measurements[name] = m.Value
		}
	}
	return s
}

// measuredNames are the report measurements a reference run measures too.
var measuredNames = []string{"accepted at once", "blocked send"}

// Jiffy is one tick of the kernel's timer (HZ=250 on the machines unplug
// is tested on; FACTS.md). TCP timers are armed in jiffies.
const Jiffy = 4 * time.Millisecond

// WheelGranularity returns how far the kernel's timer wheel can round up
// a timer armed d ahead (kernel/time/timer.c: 64 buckets per level, each
// level 8 times coarser; at HZ=250 level 0 is exact to a jiffy up to
// 252 ms, level 1 rounds to 32 ms up to 2 s, level 2 to 256 ms up to
// 16 s, level 3 to 2.048 s).
func WheelGranularity(d time.Duration) time.Duration {
	j := int64(d / Jiffy)
	g, start := int64(1), int64(63)
	for j >= start && g < 1<<24 {
		g *= 8
		start *= 8
	}
	return time.Duration(g) * Jiffy
}

// Tolerance returns how far apart two runs of the same timer series may
// land at each firing: each interval can be rounded up by the timer wheel
// (WheelGranularity of the interval) and start up to two jiffies late
// (the jiffy the timer was armed in, and the softirq that runs it), and
// every firing is armed from the previous one, so errors add up.
func Tolerance(times []time.Duration) []time.Duration {
	out := make([]time.Duration, len(times))
	var prev, sum time.Duration
	for i, t := range times {
		sum += WheelGranularity(t-prev) + 2*Jiffy
		out[i] = sum
		prev = t
	}
	return out
}

// Row is one line of a comparison: the reference's value, unplug's, the
// tolerance, and whether they agree.
type Row struct {
	Name      string `json:"name"`
	Reference string `json:"reference"`
	Unplug    string `json:"unplug"`
	Tolerance string `json:"tolerance"`
	OK        bool   `json:"ok"`
	// Timing marks rows about times, which machine load can push past
	// their tolerance; the others are mechanism rows, exact.
	Timing bool `json:"timing"`
}

// Compare lines up a reference series and unplug's. Mechanism rows are
// exact: how many retransmissions or probes (so which firing ended the
// connection), their kinds, the errnos in order and the outcome. Timing
// rows (each firing, the outcome time, measurements in seconds) allow the
// reference's Tolerance; byte counts are exact.
func Compare(ref, got Series) []Row {
	var rows []Row
	add := func(name, r, g, tol string, ok bool) {
		rows = append(rows, Row{Name: name, Reference: r, Unplug: g, Tolerance: tol, OK: ok,
			Timing: strings.HasPrefix(tol, "± ")})
	}
	add("outcome", ref.Outcome, got.Outcome, "exact", ref.Outcome == got.Outcome)
	add("errnos", fmt.Sprint(ref.Errnos), fmt.Sprint(got.Errnos), "exact", equal(ref.Errnos, got.Errnos))
	add("retransmissions and probes", fmt.Sprint(len(ref.Times)), fmt.Sprint(len(got.Times)),
		"exact: the same firing ends it", len(ref.Times) == len(got.Times))
	add("kinds", compactKinds(ref.Kinds), compactKinds(got.Kinds), "exact", equal(ref.Kinds, got.Kinds))
	if ref.RTO > 0 || got.RTO > 0 {
		// What the timers start from: shown, not judged (a different
		// RTT moves every firing; the rows below judge the firings).
		add("client rtt / rto before the outage", ms3(ref.RTT)+" / "+ms(ref.RTO), ms3(got.RTT)+" / "+ms(got.RTO), shown, true)
	}
	tol := Tolerance(ref.Times)
	for i := range max(len(ref.Times), len(got.Times)) {
		name := fmt.Sprintf("#%d since first send", i+1)
		switch {
		case i >= len(ref.Times):
			add(name, "-", secs(got.Times[i]), "", false)
		case i >= len(got.Times):
			add(name, secs(ref.Times[i]), "-", "", false)
		default:
			add(name, secs(ref.Times[i]), secs(got.Times[i]), "± "+ms(tol[i]), within(ref.Times[i], got.Times[i], tol[i]))
		}
	}
	endTol := outcomeTolerance(ref, tol)
	add("outcome since first send", secs(ref.OutcomeAt), secs(got.OutcomeAt), "± "+ms(endTol),
		within(ref.OutcomeAt, got.OutcomeAt, endTol))
	for _, name := range measuredNames {
		rv, rok := ref.Measurements[name]
		gv, gok := got.Measurements[name]
		if !rok && !gok {
			continue
		}
		if name == "blocked send" {
			d := func(v float64) time.Duration { return time.Duration(v * float64(time.Second)) }
			add(name, secs(d(rv)), secs(d(gv)), "± "+ms(endTol), rok && gok && within(d(rv), d(gv), endTol))
			continue
		}
		add(name, fmt.Sprintf("%.0f", rv), fmt.Sprintf("%.0f", gv), "exact", rok && gok && rv == gv)
	}
	return rows
}

// outcomeTolerance is the tolerance of the last firing plus the wheel
// rounding of the timer that delivered the outcome (it fires after the
// last retransmission or probe).
func outcomeTolerance(ref Series, tol []time.Duration) time.Duration {
	if len(tol) == 0 {
		return WheelGranularity(ref.OutcomeAt) + 2*Jiffy
	}
	last := ref.Times[len(ref.Times)-1]
	return tol[len(tol)-1] + WheelGranularity(max(ref.OutcomeAt-last, 0)) + 2*Jiffy
}

// Agree reports whether every row is OK.
func Agree(rows []Row) bool {
	for _, r := range rows {
		if !r.OK {
			return false
		}
	}
	return true
}

// SameMechanism reports whether every mechanism row (not Timing) is OK:
// the same outcome, errnos, count and kinds of retransmissions and probes.
func SameMechanism(rows []Row) bool {
	for _, r := range rows {
		if !r.OK && !r.Timing {
			return false
		}
	}
	return true
}

// shown is the tolerance of rows that inform and are not judged.
const shown = "(shown)"

// compactKinds writes kinds in runs: "retransmit ×5, keepalive-probe".
func compactKinds(kinds []string) string {
	if len(kinds) == 0 {
		return "none"
	}
	var parts []string
	for i := 0; i < len(kinds); {
		j := i
		for j < len(kinds) && kinds[j] == kinds[i] {
			j++
		}
		if j-i > 1 {
			parts = append(parts, fmt.Sprintf("%s ×%d", kinds[i], j-i))
		} else {
			parts = append(parts, kinds[i])
		}
		i = j
	}
	return strings.Join(parts, ", ")
}

func within(a, b, tol time.Duration) bool {
	d := a - b
	return d <= tol && -d <= tol
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func secs(d time.Duration) string { return fmt.Sprintf("%.3f s", d.Seconds()) }
func ms(d time.Duration) string   { return fmt.Sprintf("%d ms", d.Milliseconds()) }
func ms3(d time.Duration) string  { return fmt.Sprintf("%.3f ms", float64(d)/1e6) }

// FormatRows renders rows as an aligned text table.
func FormatRows(rows []Row) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "row\treference\tunplug\ttolerance\tresult")
	for _, r := range rows {
		res := "ok"
		if r.Tolerance == shown {
			res = ""
		}
		if !r.OK {
			res = "DIFFERS"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.Name, r.Reference, r.Unplug, r.Tolerance, res)
	}
	w.Flush()
	return b.String()
}
