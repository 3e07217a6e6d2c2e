package scenarios

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// The evidence in testdata/evidence is reports recorded from real runs
// (`unplug run NAME --json`, on Linux 6.18 with HZ=250; the virtual ones on
// the virtual clock). Re-evaluating the theory on them must PASS; changing
// the mechanism (a wrong sysctl or parameter, a retransmission removed or
// moved, a wrong errno, a wrong count, a wrong RTO) must turn exactly the
// rows that depend on it into FAIL. This runs without root.

// loadEvidence reads a recorded report.
func loadEvidence(t *testing.T, file string) *Report {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "evidence", file))
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return &r
}

// cloneReport deep-copies r.
func cloneReport(t *testing.T, r *Report) *Report {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var c Report
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

// reevaluate computes the scenario's theory for r's parameters (with
// override applied) and r's measured conditions, and evaluates r against it.
func reevaluate(t *testing.T, r *Report, override map[string]string) *Report {
	t.Helper()
	sc, ok := Lookup(r.Scenario)
	if !ok {
		t.Fatalf("unknown scenario %q", r.Scenario)
	}
	vals := map[string]string{}
	for _, pv := range r.Params {
		vals[pv.Name] = pv.Value
	}
	for k, v := range override {
		vals[k] = v
	}
	p, err := ParseParams(sc, vals)
	if err != nil {
		t.Fatal(err)
	}
	c := cloneReport(t, r)
	var th Theory
	if sc.Precise != nil {
		th = sc.Precise(p, conditionsOf(c))
	} else {
		th = sc.Expect(p, c.Client == "kernel")
	}
	th.evaluate(c)
	return c
}

// failing lists the rows of r that failed.
func failing(r *Report) []string {
	var out []string
	for _, e := range r.Expectations {
		if !e.Pass {
			out = append(out, e.Name)
		}
	}
	sort.Strings(out)
	return out
}

// Mutations of the evidence.

// dropRetransKinds removes the i-th retransmission or probe of the given
// kinds in direction dir (of the longest series; -1: the last).
func dropRetransKinds(dir, kinds string, i int) func(*Report) {
	return func(r *Report) {
		s := longestSeries(r, dir, kinds)
		if i < 0 {
			i = len(s) - 1
		}
		victim := s[i]
		out := r.Retransmissions[:0]
		for _, x := range r.Retransmissions {
			if x != victim {
				out = append(out, x)
			}
		}
		r.Retransmissions = out
	}
}

// dropRetrans removes the client's (dir "in") or peer's ("out") i-th
// retransmission of the longest series (-1: the last).
func dropRetrans(dir string, i int) func(*Report) {
	return dropRetransKinds(dir, "retransmit,keepalive-probe", i)
}

// shiftRetrans moves the client's i-th retransmission (or probe) by d.
func shiftRetrans(i int, d time.Duration) func(*Report) {
	return func(r *Report) {
		s := clientSeries(r, "retransmit,keepalive-probe")
		for j := range r.Retransmissions {
			if r.Retransmissions[j] == s[i] {
				r.Retransmissions[j].T += d
			}
		}
	}
}

// passRetrans marks the client's i-th retransmission as passing the fault
// layer (as if the link were up then).
func passRetrans(i int) func(*Report) {
	return func(r *Report) {
		s := clientSeries(r, "retransmit")
		for j := range r.Retransmissions {
			if r.Retransmissions[j] == s[i] {
				r.Retransmissions[j].Verdict = "pass"
			}
		}
	}
}

// wrongErrno makes the application get errno instead of what it got.
func wrongErrno(errno string) func(*Report) {
	return func(r *Report) {
		r.Outcome = errno
		for i := range r.AppErrors {
			r.AppErrors[i].Errno = errno
		}
	}
}

// removeErrno removes errno from what the application got.
func removeErrno(errno string) func(*Report) {
	return func(r *Report) {
		out := r.AppErrors[:0]
		for _, e := range r.AppErrors {
			if e.Errno != errno {
				out = append(out, e)
			}
		}
		r.AppErrors = out
	}
}

// addAppError adds an errno the application got.
func addAppError(errno string) func(*Report) {
	return func(r *Report) {
		r.AppErrors = append(r.AppErrors, AppError{T: r.Anchor, Op: "recv", Conn: 1, Errno: errno})
	}
}

// setRatios sets every backoff ratio in direction dir to v (a timer that
// does not double).
func setRatios(dir string, v float64) func(*Report) {
	return func(r *Report) {
		for i := range r.Retransmissions {
			if r.Retransmissions[i].Dir == dir && r.Retransmissions[i].Ratio > 0 {
				r.Retransmissions[i].Ratio = v
			}
		}
	}
}

// shiftWindowClose moves the peer's zero-window ACKs before the client's
// first window probe by d.
func shiftWindowClose(d time.Duration) func(*Report) {
	return func(r *Report) {
		for i, ev := range r.Timeline {
			p := ev.Packet
			if p == nil {
				continue
			}
			if p.Dir == "in" && (p.Kind == "zero-window-probe" || p.Kind == "retransmit") {
				return
			}
			if p.Dir == "out" && p.Win == 0 {
				r.Timeline[i].T += d
			}
		}
	}
}

// setMeasurement replaces a measurement's value.
func setMeasurement(name string, v float64) func(*Report) {
	return func(r *Report) {
		for i := range r.Measurements {
			if r.Measurements[i].Name == name {
				r.Measurements[i].Value = v
			}
		}
	}
}

// addMeasurement adds d to a measurement.
func addMeasurement(name string, d float64) func(*Report) {
	return func(r *Report) {
		for i := range r.Measurements {
			if r.Measurements[i].Name == name {
				r.Measurements[i].Value += d
			}
		}
	}
}

// setClient changes what the client's TCP_INFO said before the fault.
func setClient(f func(ci *ClientInfo)) func(*Report) {
	return func(r *Report) { f(r.ClientInfo) }
}

// shiftOutcome moves the outcome (and the errno) by d.
func shiftOutcome(d time.Duration) func(*Report) {
	return func(r *Report) {
		r.OutcomeAt += d
		for i := range r.AppErrors {
			r.AppErrors[i].T += d
		}
	}
}

// addPacket adds a peer packet with the given flags and verdict halfway
// through the first outage.
func addPacket(flags, verdict string) func(*Report) {
	return func(r *Report) {
		w, _ := firstOutage(r)
		t := (w.Start + w.End) / 2
		ev := Event{T: t, Kind: EventPacket, Packet: &Packet{Dir: "out", Proto: "tcp", Flags: flags, Verdict: verdict, Kind: "other"}}
		i := sort.Search(len(r.Timeline), func(i int) bool { return r.Timeline[i].T > t })
		r.Timeline = append(r.Timeline[:i], append([]Event{ev}, r.Timeline[i:]...)...)
	}
}

// removeRST removes the peer's RSTs with the given verdict.
func removeRST(verdict string) func(*Report) {
	return func(r *Report) {
		out := r.Timeline[:0]
		for _, ev := range r.Timeline {
			if p := ev.Packet; p != nil && p.Dir == "out" && p.Verdict == verdict && strings.Contains(p.Flags, "R") {
				continue
			}
			out = append(out, ev)
		}
		r.Timeline = out
	}
}

type mutation struct {
	name     string
	params   map[string]string
	mutate   func(*Report)
	wantFail []string // exactly these rows fail
}

var evidenceCases = []struct {
	file      string
	mutations []mutation
}{
	{"timeout.json", []mutation{
		{"retries2 2 instead of 4", map[string]string{"retries2": "2"}, nil,
			[]string{"ending firing", "retransmissions", "time to ETIMEDOUT"}},
		{"retries2 5 instead of 4", map[string]string{"retries2": "5"}, nil,
			[]string{"ending firing", "retransmissions", "time to ETIMEDOUT"}},
		{"last retransmission lost from the list", nil, dropRetrans("in", -1),
			[]string{"ending firing", "retransmissions"}},
		{"ECONNRESET instead of ETIMEDOUT", nil, wrongErrno("ECONNRESET"),
			[]string{"ending firing", "outcome", "time to ETIMEDOUT"}},
		{"RTO #2 40 ms late", nil, shiftRetrans(2, 40*time.Millisecond),
			[]string{"retransmission times"}},
		{"timeout 100 ms late", nil, shiftOutcome(100 * time.Millisecond),
			[]string{"time to ETIMEDOUT"}},
		{"theory from a 1 s RTO", nil, setClient(func(ci *ClientInfo) { ci.RTO = time.Second }),
			[]string{"ending firing", "retransmission times", "retransmissions", "time to ETIMEDOUT"}},
	}},
	{"timeout-user.json", []mutation{
		{"user timeout 2s instead of 1s", map[string]string{"user-timeout": "2s"}, nil,
			[]string{"ending firing", "retransmissions", "time to ETIMEDOUT"}},
		{"first RTO lost from the list", nil, dropRetrans("in", 1),
			[]string{"ending firing", "retransmission times", "retransmissions"}},
		{"EPIPE instead of ETIMEDOUT", nil, wrongErrno("EPIPE"),
			[]string{"ending firing", "outcome", "time to ETIMEDOUT"}},
	}},
	{"timeout-virtual.json", []mutation{
		{"retries2 3 instead of 4", map[string]string{"retries2": "3"}, nil,
			[]string{"ending firing", "retransmissions", "time to ETIMEDOUT"}},
		{"a retransmission 1 ms late on the exact clock", nil, shiftRetrans(1, time.Millisecond),
			[]string{"retransmission times"}},
		{"timeout 1 ms late on the exact clock", nil, shiftOutcome(time.Millisecond),
			[]string{"time to ETIMEDOUT"}},
		{"tail-loss probe lost from the list", nil, dropRetrans("in", 0),
			[]string{"ending firing", "retransmission times", "retransmissions"}},
		{"ECONNRESET instead of ETIMEDOUT", nil, wrongErrno("ECONNRESET"),
			[]string{"ending firing", "outcome", "time to ETIMEDOUT"}},
	}},
	{"brief-outage.json", []mutation{
		{"outage 1.5s instead of 3s", map[string]string{"outage": "1.5s"}, nil,
			[]string{"recovery lag", "retransmission that gets through", "retransmissions", "time to recovered"}},
		{"the passing retransmission lost from the list", nil, dropRetrans("in", -1),
			[]string{"recovered by a retransmission after the outage", "retransmission that gets through", "retransmissions"}},
		{"a retransmission inside the outage passes", nil, passRetrans(3),
			[]string{"recovered by a retransmission after the outage", "retransmission that gets through"}},
		{"ETIMEDOUT instead of a recovery", nil, func(r *Report) { r.Outcome = "ETIMEDOUT" },
			[]string{"outcome", "time to recovered"}},
		{"RTO #3 60 ms early", nil, shiftRetrans(3, -60*time.Millisecond),
			[]string{"retransmission times"}},
		{"recovery lag 0.5 s longer", nil, addMeasurement("recovery lag", 0.5),
			[]string{"recovery lag"}},
	}},
	{"brief-outage-virtual.json", []mutation{
		{"outage 3.5s instead of 3s", map[string]string{"outage": "3.5s"}, nil,
			[]string{"recovery lag", "retransmission that gets through", "retransmissions", "time to recovered"}},
		{"recovery 1 ms late on the exact clock", nil, shiftOutcome(time.Millisecond),
			[]string{"time to recovered"}},
		{"a retransmission 1 ms early on the exact clock", nil, shiftRetrans(2, -time.Millisecond),
			[]string{"retransmission times"}},
		{"a retransmission inside the outage passes", nil, passRetrans(2),
			[]string{"recovered by a retransmission after the outage", "retransmission that gets through"}},
		{"ECONNRESET instead of a recovery", nil, func(r *Report) { r.Outcome = "ECONNRESET" },
			[]string{"outcome", "time to recovered"}},
	}},
	{"keepalive.json", []mutation{
		{"count 4 instead of 3", map[string]string{"count": "4"}, nil,
			[]string{"keepalive probes", "time to ETIMEDOUT"}},
		{"idle 2s instead of 1s", map[string]string{"idle": "2s"}, nil,
			[]string{"probe times", "time to ETIMEDOUT"}},
		{"a probe lost from the list", nil, dropRetrans("in", 1),
			[]string{"keepalive probes", "probe times"}},
		{"ECONNRESET instead of ETIMEDOUT", nil, wrongErrno("ECONNRESET"),
			[]string{"outcome", "time to ETIMEDOUT"}},
	}},
	{"keepalive-virtual.json", []mutation{
		{"probe 1 ms late on the exact clock", nil, shiftRetrans(0, time.Millisecond),
			[]string{"probe times"}},
		{"intvl 2s instead of 1s", map[string]string{"intvl": "2s"}, nil,
			[]string{"probe times", "time to ETIMEDOUT"}},
		{"count 2 instead of 3", map[string]string{"count": "2"}, nil,
			[]string{"keepalive probes", "time to ETIMEDOUT"}},
		{"ECONNRESET instead of ETIMEDOUT", nil, wrongErrno("ECONNRESET"),
			[]string{"outcome", "time to ETIMEDOUT"}},
	}},
	{"sendbuf-full.json", []mutation{
		{"SO_SNDBUF twice as large", nil, setClient(func(ci *ClientInfo) { ci.SndBuf *= 2 }),
			[]string{"accepted at once", "taken before send blocked"}},
		{"user timeout 5s instead of 3s", map[string]string{"user-timeout": "5s"}, nil,
			[]string{"blocked send ended", "time to EPIPE"}},
		{"no ETIMEDOUT before the EPIPEs", nil, removeErrno("ETIMEDOUT"),
			[]string{"ETIMEDOUT, then EPIPE"}},
		{"recv did not see end of file", nil, setMeasurement("recv end of file", 0),
			[]string{"recv end of file"}},
		{"ECONNRESET instead of EPIPE", nil, func(r *Report) { r.Outcome = "ECONNRESET" },
			[]string{"outcome", "time to EPIPE"}},
	}},
	{"syn-timeout.json", []mutation{
		{"syn-retries 3 instead of 2", map[string]string{"syn-retries": "3"}, nil,
			[]string{"SYN retransmissions", "time to ETIMEDOUT"}},
		{"a SYN lost from the list", nil, dropRetrans("in", 1),
			[]string{"SYN retransmissions", "backoff ratio"}},
		{"second SYN 600 ms late", nil, shiftRetrans(1, 600*time.Millisecond),
			[]string{"SYN times"}},
		{"SYN timer not doubling", nil, setRatios("in", 1),
			[]string{"backoff ratio"}},
		// Inside the old fixed 1.6–2.5; outside what the timer wheel and
		// the measured RTT allow.
		{"SYN timer ×1.85 instead of doubling", nil, setRatios("in", 1.85),
			[]string{"backoff ratio"}},
		{"ECONNREFUSED instead of ETIMEDOUT", nil, wrongErrno("ECONNREFUSED"),
			[]string{"outcome", "time to ETIMEDOUT"}},
	}},
	{"syn-late.json", []mutation{
		{"outage 4s instead of 2s", map[string]string{"outage": "4s"}, nil,
			[]string{"SYN retransmissions", "time to connected"}},
		{"linear-timeouts 4 instead of 0", map[string]string{"linear-timeouts": "4"}, nil,
			[]string{"SYN times", "time to connected"}},
		{"SYN timer not doubling", nil, setRatios("in", 1),
			[]string{"backoff ratio"}},
		{"a SYN lost from the list", nil, dropRetrans("in", 0),
			[]string{"SYN retransmissions", "SYN times"}},
		{"ETIMEDOUT instead of connecting", nil, func(r *Report) { r.Outcome = "ETIMEDOUT" },
			[]string{"outcome", "time to connected"}},
	}},
	{"syn-timeout-virtual.json", []mutation{
		{"a SYN 1 ms late on the exact clock", nil, shiftRetrans(2, time.Millisecond),
			[]string{"SYN times"}},
		{"timeout 1 ms late on the exact clock", nil, shiftOutcome(time.Millisecond),
			[]string{"time to ETIMEDOUT"}},
		{"SYN timer ×1.9 instead of doubling", nil, setRatios("in", 1.9),
			[]string{"backoff ratio"}},
		{"a SYN lost from the list", nil, dropRetrans("in", -1),
			[]string{"SYN retransmissions"}},
		{"ECONNREFUSED instead of ETIMEDOUT", nil, wrongErrno("ECONNREFUSED"),
			[]string{"outcome", "time to ETIMEDOUT"}},
	}},
	{"half-open.json", []mutation{
		{"a second RST lost in the outage", nil, addPacket("R", "drop"),
			[]string{"peer's RST lost in the outage"}},
		{"no RST answering the client", nil, removeRST("pass"),
			[]string{"RST answering the client"}},
		{"outage 4s instead of 2s", map[string]string{"outage": "4s"}, nil,
			[]string{"time to ECONNRESET"}},
		{"EPIPE instead of ECONNRESET", nil, wrongErrno("EPIPE"),
			[]string{"outcome", "time to ECONNRESET"}},
	}},
	{"idle-outage.json", []mutation{
		{"a packet during the outage", nil, addPacket(".", "drop"),
			[]string{"packets during the outage"}},
		{"not established after the outage", nil, setMeasurement("established after the outage", 0),
			[]string{"established after the outage"}},
		{"an error", nil, addAppError("ETIMEDOUT"),
			[]string{"errors"}},
		{"ETIMEDOUT instead of surviving", nil, func(r *Report) { r.Outcome = "ETIMEDOUT" },
			[]string{"outcome"}},
	}},
	{"zero-window.json", []mutation{
		{"three probes lost from the list", nil, func(r *Report) {
			for i := 0; i < 3; i++ {
				dropRetransKinds("in", "zero-window-probe,retransmit", 0)(r)
			}
		}, []string{"window probes", "probe backoff ratio"}},
		{"probes not backing off", nil, setRatios("in", 1),
			[]string{"probe backoff ratio"}},
		{"probe interval ×1.7 instead of doubling", nil, setRatios("in", 1.7),
			[]string{"probe backoff ratio"}},
		{"ETIMEDOUT instead of surviving", nil, func(r *Report) { r.Outcome = "ETIMEDOUT" },
			[]string{"outcome"}},
	}},
	// The user-timeout run's timeline is trimmed to the packets around
	// the window close, like the virtual one's.
	{"zero-window-user.json", []mutation{
		{"user-timeout 2s instead of 1s", map[string]string{"user-timeout": "2s"}, nil,
			[]string{"time to ETIMEDOUT", "window probes"}},
		{"a probe lost from the list", nil, dropRetransKinds("in", "zero-window-probe,retransmit", 0),
			[]string{"window probes"}},
		{"survived instead of ETIMEDOUT", nil, func(r *Report) { r.Outcome = OutcomeSurvived },
			[]string{"outcome", "time to ETIMEDOUT"}},
	}},
	// The virtual run's timeline is trimmed to the packets around the
	// window close (the fill's 750 packets say nothing the theory reads).
	{"zero-window-virtual.json", []mutation{
		{"a probe lost from the list", nil, dropRetransKinds("in", "zero-window-probe,retransmit", 0),
			[]string{"window probes"}},
		{"the window closed 1 s later", nil, shiftWindowClose(time.Second),
			[]string{"window probes"}},
		{"RTO 400 ms as the window closed", nil, setMeasurement(windowRTOName, 0.4),
			[]string{"window probes"}},
		{"probes not backing off", nil, setRatios("in", 1),
			[]string{"probe backoff ratio"}},
		{"probe interval ×1.9 instead of doubling on the exact clock", nil, setRatios("in", 1.9),
			[]string{"probe backoff ratio"}},
		{"ETIMEDOUT instead of surviving", nil, func(r *Report) { r.Outcome = "ETIMEDOUT" },
			[]string{"outcome"}},
	}},
	{"peer-retransmit.json", []mutation{
		{"peer-timeout 8s instead of 4s", map[string]string{"peer-timeout": "8s"}, nil,
			[]string{"peer gave up after", "peer retransmissions"}},
		{"a peer retransmission lost from the list", nil, dropRetrans("out", 1),
			[]string{"peer retransmissions"}},
		{"peer RTO not doubling", nil, setRatios("out", 1),
			[]string{"peer backoff ratio"}},
		{"peer RTO ×1.8 instead of doubling", nil, setRatios("out", 1.8),
			[]string{"peer backoff ratio"}},
		{"EPIPE instead of ECONNRESET", nil, wrongErrno("EPIPE"),
			[]string{"outcome"}},
	}},
	// The virtual run gives up exactly TCP_USER_TIMEOUT after the original
	// send of the segment gVisor retransmits: one timer more or less, or a
	// millisecond, fails it.
	{"peer-retransmit-virtual.json", []mutation{
		{"give-up 1 ms late on the exact clock", nil, addMeasurement("peer gave up after", 0.001),
			[]string{"peer gave up after"}},
		{"given up at the last RTO firing (one timer early)", nil, func(r *Report) {
			s := longestSeries(r, "out", "retransmit")
			setMeasurement("peer gave up after", (s[len(s)-1].T - r.Anchor).Seconds())(r)
		}, []string{"peer gave up after"}},
		{"given up one doubled RTO after the last firing (no cap to the user timeout)", nil, func(r *Report) {
			s := longestSeries(r, "out", "retransmit")
			last := s[len(s)-1]
			setMeasurement("peer gave up after", (last.T + 2*last.Interval - r.Anchor).Seconds())(r)
		}, []string{"peer gave up after"}},
		{"peer-timeout 5s instead of 4s", map[string]string{"peer-timeout": "5s"}, nil,
			[]string{"peer gave up after"}},
		{"peer-timeout 2s instead of 4s", map[string]string{"peer-timeout": "2s"}, nil,
			[]string{"peer gave up after", "peer retransmissions"}},
		{"a peer retransmission lost from the list", nil, dropRetrans("out", 2),
			[]string{"peer retransmissions"}},
		{"peer RTO ×1.9 instead of doubling", nil, setRatios("out", 1.9),
			[]string{"peer backoff ratio"}},
		{"EPIPE instead of ECONNRESET", nil, wrongErrno("EPIPE"),
			[]string{"outcome"}},
	}},
}

// TestVerdictsCanFail: recorded evidence passes, and every mutation fails
// exactly the rows it should; together the mutations fail every row.
func TestVerdictsCanFail(t *testing.T) {
	for _, ec := range evidenceCases {
		t.Run(strings.TrimSuffix(ec.file, ".json"), func(t *testing.T) {
			rec := loadEvidence(t, ec.file)
			base := reevaluate(t, rec, nil)
			if base.Verdict != VerdictPass {
				var b bytes.Buffer
				base.WriteTable(&b)
				t.Fatalf("recorded evidence does not pass its theory:\n%s", b.String())
			}
			covered := map[string]bool{}
			for _, m := range ec.mutations {
				ev := cloneReport(t, rec)
				if m.mutate != nil {
					m.mutate(ev)
				}
				got := reevaluate(t, ev, m.params)
				want := append([]string(nil), m.wantFail...)
				sort.Strings(want)
				if got.Verdict != VerdictFail || strings.Join(failing(got), ", ") != strings.Join(want, ", ") {
					var b bytes.Buffer
					got.WriteTable(&b)
					t.Errorf("%s: verdict %s, failing rows [%s], want FAIL on [%s]\n%s", m.name, got.Verdict,
						strings.Join(failing(got), ", "), strings.Join(want, ", "), b.String())
				}
				for _, n := range m.wantFail {
					covered[n] = true
				}
			}
			for _, e := range base.Expectations {
				if !covered[e.Name] {
					t.Errorf("no mutation makes row %q fail", e.Name)
				}
			}
		})
	}
}
