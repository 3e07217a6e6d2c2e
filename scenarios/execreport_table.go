package scenarios

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// tableKernelLines bounds the kernel samples listed per connection.
const tableKernelLines = 12

// writeExec writes the program's connections: one block each, with when it
// opened, where to, bytes, settings and theory, how it ended and the
// kernel's view over time.
func (r *Report) writeExec(w io.Writer) {
	x := r.Exec
	if x == nil {
		return
	}
	var sys []string
	for _, sc := range x.Sysctls {
		sys = append(sys, strings.TrimPrefix(sc.Name, "net.ipv4.")+"="+sc.Value)
	}
	sort.Strings(sys)
	if len(x.Argv) > 0 {
		fmt.Fprintf(w, "program    %s: exit %d at %s", joinArgv(x.Argv), x.ExitCode, seconds(x.ExitedAt))
		if x.Stopped != "" {
			fmt.Fprintf(w, " (%s)", x.Stopped)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "namespace  %s\n", strings.Join(sys, " "))
	fmt.Fprintf(w, "kernel     %s\n\n", x.KernelView)
	fmt.Fprintf(w, "connections (%d):\n", len(x.Conns))
	for _, c := range x.Conns {
		fmt.Fprintf(w, "c%d  %s → %s  upstream %s\n", c.ID, c.Client, c.Peer, c.Upstream)
		est := "never established"
		if c.Established != nil {
			est = "established " + seconds(*c.Established)
		}
		fmt.Fprintf(w, "    opened    %s, %s; sent %d bytes, received %d\n", seconds(c.Opened), est, c.BytesSent, c.BytesReceived)
		src := c.Settings.Source
		fmt.Fprintf(w, "    settings  %s (%s)\n", settingsText(c.Settings), src)
		if c.FaultHit != nil {
			line := fmt.Sprintf("    fault     first drop %s, last %s, %d dropped; %d retransmissions, %d probes by the program", seconds(*c.FaultHit), seconds(*c.FaultLast), c.Dropped, c.Retransmits, c.Probes)
			if c.Backoff > 0 {
				line += fmt.Sprintf(", backoff ×%.2f", c.Backoff)
			}
			if c.PeerRetransmits > 0 {
				line += fmt.Sprintf("; %d by the peer", c.PeerRetransmits)
			}
			fmt.Fprintln(w, line)
			if series := r.connSeries(c.ID); series != "" {
				fmt.Fprintf(w, "    series    %s\n", series)
			}
		}
		fmt.Fprintf(w, "    ended     %s at %s: %s [%s]\n", strings.ToUpper(c.End.How), seconds(c.End.At), c.End.Detail, c.End.Evidence)
		fmt.Fprintf(w, "    theory    %s\n", c.Theory)
		fmt.Fprintf(w, "    verdict   %s\n", c.Verdict)
		if len(c.Kernel) > 0 {
			fmt.Fprintf(w, "    kernel    %d changes seen (state timer retrans backoff probes rto unacked):\n", len(c.Kernel))
			ks := c.Kernel
			skip := 0
			if len(ks) > tableKernelLines {
				skip = len(ks) - tableKernelLines
				ks = append(append([]KernelSample(nil), ks[:tableKernelLines/2]...), ks[len(ks)-tableKernelLines/2:]...)
			}
			for i, k := range ks {
				if skip > 0 && i == tableKernelLines/2 {
					fmt.Fprintf(w, "              … %d more\n", skip)
				}
				timer := "-"
				if k.Timer != "" {
					timer = fmt.Sprintf("%s,%s", k.Timer, fmtDur(k.TimerExpires))
				}
				closed := ""
				if k.Closed {
					closed = " (closed by the program)"
				}
				fmt.Fprintf(w, "      %8.3f  %-11s %-16s %2d %2d %2d %7s %3d%s\n", k.T.Seconds(), k.State, timer, k.Retransmits, k.Backoff, k.Probes, fmtDur(k.RTO), k.Unacked, closed)
			}
		}
	}
	fmt.Fprintln(w)
}

// settingsText renders the socket's timeout settings and its RTO (and
// RTT, when sock_diag read them).
func settingsText(s TimeoutSettings) string {
	text := settingsPhrase(s) + ", RTO " + fmtDur(s.RTO)
	if s.RTO <= 0 {
		text = settingsPhrase(s) + ", RTO unknown"
	}
	if s.RTT > 0 {
		text += ", RTT " + fmtDur(s.RTT)
	}
	return text
}

// tableSeriesItems bounds the retransmissions and probes listed per
// connection.
const tableSeriesItems = 16

// connSeries lists a connection's retransmissions and probes by the
// program as "retransmit +208ms, +412ms ×1.98 …", each with its verdict
// when it got through.
func (r *Report) connSeries(conn int) string {
	var items []string
	more := 0
	for _, x := range r.Retransmissions {
		if x.Conn != conn || x.Dir != "in" {
			continue
		}
		if len(items) >= tableSeriesItems {
			more++
			continue
		}
		it := x.Kind + " +" + fmtDur(x.Interval)
		if x.Ratio > 0 {
			it += fmt.Sprintf(" ×%.2f", x.Ratio)
		}
		if x.Verdict != "drop" {
			it += " (" + x.Verdict + ")"
		}
		items = append(items, it)
	}
	if more > 0 {
		items = append(items, fmt.Sprintf("… %d more", more))
	}
	return strings.Join(items, ", ")
}
