package scenarios

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Limits of the human-readable table; --json has everything.
const (
	tableTimelineLines = 80
	tableRetransmits   = 40
)

// WriteTable writes the report for a human: header, parameters, outcome
// and verdict, theory versus measurement, the retransmissions with their
// intervals and backoff ratios, and a compact timeline in which runs of
// ordinary packets are summarized.
func (r *Report) WriteTable(w io.Writer) error {
	bw := bufio.NewWriter(w)
	r.writeHeader(bw)
	r.writeExpectations(bw)
	r.writeExec(bw)
	r.writeRetransmissions(bw)
	r.writeTimeline(bw)
	r.writeFooter(bw)
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

func (r *Report) writeHeader(w io.Writer) {
	fmt.Fprintf(w, "scenario   %s — %s\n", r.Scenario, r.Description)
	client := "Linux kernel TCP in a private network namespace"
	if r.Client != "kernel" {
		client = "gVisor netstack"
	} else if r.Exec != nil && len(r.Exec.Argv) == 0 {
		client = "any program's kernel TCP connecting to the peer" // a serve report
	}
	fmt.Fprintf(w, "client     %s, %s clock; peer: gVisor netstack at 198.18.0.2\n", client, r.Clock)
	if r.LinkDelay > 0 {
		fmt.Fprintf(w, "link       %s one-way delay\n", r.LinkDelay)
	}
	if ci := r.ClientInfo; ci != nil {
		fmt.Fprintf(w, "client TCP RTT %s, RTO %s at %s, before the fault (TCP_INFO", fmtDur(ci.RTT), fmtDur(ci.RTO), seconds(ci.T))
		if ci.HZ > 0 {
			fmt.Fprintf(w, "; HZ=%d from %s", ci.HZ, ci.HZFrom)
		}
		if ci.SndBuf > 0 {
			fmt.Fprintf(w, "; SO_SNDBUF %d, MSS %d", ci.SndBuf, ci.MSS)
		}
		fmt.Fprintln(w, ")")
	} else {
		fmt.Fprintln(w, "client TCP no connection before the fault (the theory uses nominal timers)")
	}
	if len(r.Params) > 0 {
		var ps []string
		for _, p := range r.Params {
			ps = append(ps, fmt.Sprintf("--%s %s", p.Name, p.Value))
		}
		fmt.Fprintf(w, "parameters %s\n", strings.Join(ps, "  "))
	}
	if r.Seed != 0 {
		fmt.Fprintf(w, "seed       %d\n", r.Seed)
	}
	fmt.Fprintf(w, "anchor     %s at %s (expected times count from here)\n", r.AnchorLabel, seconds(r.Anchor))
	fmt.Fprintln(w)
	if r.Outcome != "" {
		fmt.Fprintf(w, "outcome    %s at %s: %s\n", r.Outcome, seconds(r.OutcomeAt), r.OutcomeDetail)
	} else {
		fmt.Fprintf(w, "outcome    (none)\n")
	}
	if r.Errno != "" {
		fmt.Fprintf(w, "errno      %s at %s", r.Errno, seconds(r.ErrnoAt))
		if len(r.AppErrors) > 1 {
			var rest []string
			for _, e := range r.AppErrors[1:] {
				rest = append(rest, fmt.Sprintf("%s %s at %s", e.Op, e.Errno, seconds(e.T)))
			}
			fmt.Fprintf(w, ", then %s", strings.Join(rest, ", "))
		}
		fmt.Fprintln(w)
	}
	verdict := strings.ToUpper(r.Verdict)
	switch r.Verdict {
	case VerdictPass:
		if len(r.Expectations) == 0 {
			verdict += " — nothing to check: no --expect gate, and no connection the kernel timed out to compare with its theory"
		} else {
			verdict += " — everything as the theory predicts"
		}
	case VerdictFail:
		verdict += " — see the rows marked FAIL"
	case VerdictError:
		verdict += " — " + r.Error
	}
	fmt.Fprintf(w, "verdict    %s\n\n", verdict)
}

func (r *Report) writeExpectations(w io.Writer) {
	if len(r.Expectations) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "expectation\ttheory\tmeasured\tresult")
	timing := false
	for _, e := range r.Expectations {
		res := "ok"
		if !e.Pass {
			res = "FAIL"
		}
		name := e.Name
		if e.Timing {
			name += " *"
			timing = true
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, e.Theory, e.Measured, res)
	}
	tw.Flush()
	if timing {
		fmt.Fprintln(w, "* timing: depends on timer precision and load; the range is a tolerance")
	}
	for _, e := range r.Expectations {
		if e.Basis != "" && e.Name != "outcome" {
			fmt.Fprintf(w, "  %s: %s\n", e.Name, e.Basis)
		}
	}
	if len(r.Measurements) > 0 {
		var ms []string
		for _, m := range r.Measurements {
			ms = append(ms, fmt.Sprintf("%s %s", m.Name, formatValue(m.Value, m.Unit)))
		}
		fmt.Fprintf(w, "measured: %s\n", strings.Join(ms, "; "))
	}
	fmt.Fprintln(w)
}

func (r *Report) writeRetransmissions(w io.Writer) {
	if len(r.Retransmissions) == 0 {
		fmt.Fprintf(w, "retransmissions: none\n\n")
		return
	}
	fmt.Fprintf(w, "retransmissions and probes (%d):\n", len(r.Retransmissions))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "time\tdirection\tkind\tconn\tseq\tlen\tverdict\tn\tinterval\tratio\t")
	rows := r.Retransmissions
	skipFrom, skipTo := len(rows), len(rows)
	if len(rows) > tableRetransmits {
		skipFrom, skipTo = tableRetransmits*3/4, len(rows)-tableRetransmits/4
	}
	for i, x := range rows {
		if i == skipFrom {
			fmt.Fprintf(tw, "…\t%d more\t\t\t\t\t\t\t\t\t\n", skipTo-skipFrom)
		}
		if i >= skipFrom && i < skipTo {
			continue
		}
		ratio := ""
		if x.Ratio > 0 {
			ratio = fmt.Sprintf("×%.2f", x.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%d\t%s\t%s\t\n",
			seconds(x.T), dirName(x.Dir), x.Kind, x.Conn, x.Seq, x.Len, x.Verdict, x.N, fmtDur(x.Interval), ratio)
	}
	tw.Flush()
	fmt.Fprintln(w)
}

func dirName(dir string) string {
	if dir == "out" {
		return "peer → client"
	}
	return "client → peer"
}

// timelineLine is one line of the compact timeline.
type timelineLine struct {
	t    time.Duration
	kind string
	text string
}

func (r *Report) writeTimeline(w io.Writer) {
	lines := compactTimeline(r.Timeline)
	fmt.Fprintf(w, "timeline (%d events; times since the start):\n", len(r.Timeline))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	skipFrom, skipTo := len(lines), len(lines)
	if len(lines) > tableTimelineLines {
		skipFrom, skipTo = tableTimelineLines*3/4, len(lines)-tableTimelineLines/4
	}
	for i, l := range lines {
		if i == skipFrom {
			fmt.Fprintf(tw, "\t…\t%d more lines (the JSON report has every event)\n", skipTo-skipFrom)
		}
		if i >= skipFrom && i < skipTo {
			continue
		}
		fmt.Fprintf(tw, "%8.3f\t%s\t%s\n", l.t.Seconds(), l.kind, l.text)
	}
	tw.Flush()
	if r.Packets.NotInTimeline > 0 {
		fmt.Fprintf(w, "(%d later packets are counted but not listed)\n", r.Packets.NotInTimeline)
	}
	fmt.Fprintln(w)
}

// compactTimeline turns events into lines, folding each run of more than
// two ordinary packets (new segments and non-TCP packets, passed or
// dropped) into one summary line. Retransmissions and probes keep a line
// each.
func compactTimeline(events []Event) []timelineLine {
	var out []timelineLine
	var run []*Event
	flush := func() {
		if len(run) <= 2 {
			for _, ev := range run {
				kind := "packet"
				if ev.Packet.Verdict != "pass" {
					kind = ev.Packet.Verdict
				}
				out = append(out, timelineLine{ev.T, kind, packetText(ev.Packet)})
			}
			run = run[:0]
			return
		}
		in, dropped, delayed, bytes := 0, 0, 0, 0
		for _, ev := range run {
			p := ev.Packet
			if p.Dir == "in" {
				in++
			}
			switch p.Verdict {
			case "drop":
				dropped++
			case "delay":
				delayed++
			}
			bytes += p.Len
		}
		text := fmt.Sprintf("%d packets (%d client → peer, %d peer → client, %d payload bytes)", len(run), in, len(run)-in, bytes)
		if dropped > 0 {
			text += fmt.Sprintf(", %d dropped", dropped)
		}
		if delayed > 0 {
			text += fmt.Sprintf(", %d delayed", delayed)
		}
		out = append(out, timelineLine{run[0].T, "packets", text})
		run = run[:0]
	}
	for i := range events {
		ev := &events[i]
		if p := ev.Packet; p != nil && (p.Kind == "new" || p.Kind == "other") {
			run = append(run, ev)
			continue
		}
		flush()
		kind := ev.Kind
		if ev.Packet != nil {
			kind = ev.Packet.Kind
		}
		text := ev.Text
		if ev.Conn > 0 && ev.Packet == nil {
			text = fmt.Sprintf("[c%d] %s", ev.Conn, text)
		}
		if ev.Count > 1 {
			text += fmt.Sprintf(" (until %.3f s)", ev.End.Seconds())
		}
		out = append(out, timelineLine{ev.T, kind, text})
	}
	flush()
	return out
}

func (r *Report) writeFooter(w io.Writer) {
	p := r.Packets
	fmt.Fprintf(w, "packets    %d seen: %d client → peer (%d dropped), %d peer → client (%d dropped)",
		p.Total, p.In, p.DroppedIn, p.Out, p.DroppedOut)
	if p.Delayed > 0 {
		fmt.Fprintf(w, ", %d delayed", p.Delayed)
	}
	fmt.Fprintf(w, "; retransmissions %d / %d, probes %d / %d (client / peer)\n",
		p.RetransmitsIn, p.RetransmitsOut, p.ProbesIn, p.ProbesOut)
	fmt.Fprintf(w, "duration   %s on the %s clock, %s wall", seconds(r.Duration), r.Clock, seconds(r.Wall.Duration))
	if r.Wall.Speedup > 0 {
		fmt.Fprintf(w, " (%.0f× faster than real time)", r.Wall.Speedup)
	}
	fmt.Fprintln(w)
}
