package reference

import (
	"fmt"
	"time"

	"github.com/unplug-dev/unplug/scenarios"
)

// Applied is what became of one iptables rule in an exec reference run:
// when it was in place (since the program's start; Off 0: until the end),
// how many packets on the client's link it matched meanwhile (the lab's
// count, which decides the packets' fate in the reference report), and
// iptables' own packet counter when it was removed (-1: unread): the two
// agree unless a packet crossed while iptables was being changed.
type Applied struct {
	Rule    Rule
	On, Off time.Duration
	Placed  bool
	// AtEnd: removed at the end of the run, not by its for=.
	AtEnd   bool
	Counted int
	Counter int
	on, off time.Time
}

// FromConn reduces connection c of an exec report to a Series with
// FromReport's definitions, on the program's packets only: its
// retransmissions and probes of that connection in the report's
// timeline, timed from its last packet before the first of them (the
// original transmission; the peer's packets are left out because a
// kernel server and gVisor answer at different moments, and with dir=out
// rules those answers are on the link though dropped); its ending (ConnEnd.How) as the outcome and
// when it ended as the outcome time; its base RTT and RTO. A connection
// without retransmissions or probes is timed from its first packet (the
// outcome time is then how long it lived).
func FromConn(r *scenarios.Report, c scenarios.ConnReport, source string) Series {
	s := Series{Source: source, Outcome: c.End.How, Measurements: map[string]float64{}}
	var pkts []Packet
	for _, ev := range r.Timeline {
		if p := ev.Packet; p != nil && ev.Conn == c.ID && p.Dir == "in" && p.Proto == "tcp" && p.Kind != "injected" {
			pkts = append(pkts, Packet{T: ev.T, Dir: p.Dir, Kind: p.Kind, Seq: p.Seq, Len: p.Len})
		}
	}
	s.seriesOf(pkts)
	if len(s.Times) == 0 && len(pkts) > 0 {
		s.T0 = pkts[0].T
	}
	s.OutcomeAt = c.End.At - s.T0
	s.RTT, s.RTO = c.Settings.RTT, c.Settings.RTO
	return s
}

// CompareExec lines up the reference run of a program (ref) and unplug's
// (got): the exit codes and the number of connections exactly, then each
// connection, in the order they opened, with Compare's rows (how it ended
// as the outcome, its retransmissions and probes, their times with the
// timer wheel's tolerance). Errnos are not rows: a program's are not
// seen from outside.
func CompareExec(ref, got *scenarios.Report) []Row {
	var rows []Row
	add := func(name, r, g, tol string, ok bool) {
		rows = append(rows, Row{Name: name, Reference: r, Unplug: g, Tolerance: tol, OK: ok})
	}
	rc, gc := conns(ref), conns(got)
	code := func(r *scenarios.Report) string {
		if r == nil || r.Exec == nil {
			return "-"
		}
		return fmt.Sprint(r.Exec.ExitCode)
	}
	add("exit code", code(ref), code(got), "exact", code(ref) == code(got) && code(ref) != "-")
	add("TCP connections", fmt.Sprint(len(rc)), fmt.Sprint(len(gc)), "exact", len(rc) == len(gc))
	for i := range max(len(rc), len(gc)) {
		prefix := fmt.Sprintf("conn %d ", i+1)
		switch {
		case i >= len(rc):
			add(prefix+"to", "-", gc[i].Peer, "", false)
			continue
		case i >= len(gc):
			add(prefix+"to", rc[i].Peer, "-", "", false)
			continue
		}
		add(prefix+"to", rc[i].Peer, gc[i].Peer, "exact", rc[i].Peer == gc[i].Peer)
		for _, r := range Compare(FromConn(ref, rc[i], "iptables reference"), FromConn(got, gc[i], "unplug")) {
			switch r.Name {
			case "errnos":
				continue
			case "outcome":
				r.Name = "ended"
			case "outcome since first send":
				r.Name = "ended since first send"
			}
			r.Name = prefix + r.Name
			rows = append(rows, r)
		}
	}
	return rows
}

func conns(r *scenarios.Report) []scenarios.ConnReport {
	if r == nil || r.Exec == nil {
		return nil
	}
	return r.Exec.Conns
}
