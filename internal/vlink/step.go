package vlink

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
)

// Stepper pauses a virtual-time run at every timer firing and every packet,
// prints what happened and the client's connections (RTO, state, cwnd), and
// waits for a command:
//
//	Enter or s   next event
//	n N          run N events, then stop again
//	c            continue to the end without stopping
//	q            same as c (the run must end on its own to produce a report)
//
// Commands come from any reader: a terminal, a script file (--step-script),
// or a test. While it waits nothing moves: virtual time only advances when
// the driver fires the next timer, and the driver is what is waiting.
//
// Packets are shown as they cross the fault layer; the connection table is
// printed only at timer stops, where no gVisor lock is held.
type Stepper struct {
	mu    sync.Mutex
	in    *bufio.Scanner
	out   io.Writer
	pair  *Pair
	skip  int  // events to pass before stopping again
	run   bool // continue without stopping
	stops int
	n     int // events seen
}

// NewStepper returns a stepper for p reading commands from in and writing to
// out. Install it with Attach before the run starts.
func NewStepper(p *Pair, in io.Reader, out io.Writer) *Stepper {
	return &Stepper{in: bufio.NewScanner(in), out: out, pair: p}
}

// Attach hooks the stepper to the pair's clock; use Observer for packets.
func (s *Stepper) Attach() {
	s.pair.Clock.OnFire(s.timer)
}

// Observer returns the fault.Observer that stops at each packet.
func (s *Stepper) Observer() fault.Observer { return fault.ObserverFunc(s.packet) }

// Stops returns how many times the stepper stopped for a command.
func (s *Stepper) Stops() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stops
}

// internalTimers are the link's own delivery timers; packets are shown when
// they cross the fault layer, so their deliveries are not separate stops.
func internalTimer(name string) bool {
	return strings.Contains(name, "unplug/internal/vlink.")
}

func (s *Stepper) timer(name string) {
	if internalTimer(name) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	fmt.Fprintf(s.out, "[%s] #%d timer %s\n", fmtTime(s.pair.Now()), s.n, shortName(name))
	if s.shouldStop() {
		s.printConns()
		s.prompt()
	}
}

func (s *Stepper) packet(ev *fault.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	p := ev.Packet
	verdict := ev.Decision.Verdict.String()
	if ev.Comment != "" {
		verdict = ev.Comment
	}
	fmt.Fprintf(s.out, "[%s] #%d packet %s %s:%d > %s:%d %s seq=%d ack=%d len=%d win=%d  %s\n",
		fmtTime(s.pair.Now()), s.n, arrow(p.Dir), p.Src, p.SrcPort, p.Dst, p.DstPort,
		tcpFlags(p.Flags), p.Seq, p.Ack, p.PayloadLen, p.Window, verdict)
	if s.shouldStop() {
		s.prompt()
	}
}

func (s *Stepper) shouldStop() bool {
	if s.run {
		return false
	}
	if s.skip > 0 {
		s.skip--
		return s.skip == 0
	}
	return true
}

// prompt reads commands until one resumes the run.
func (s *Stepper) prompt() {
	s.stops++
	for {
		fmt.Fprint(s.out, "step> ")
		if !s.in.Scan() {
			fmt.Fprintln(s.out, "(end of commands: continuing)")
			s.run = true
			return
		}
		cmd := strings.Fields(s.in.Text())
		switch {
		case len(cmd) == 0 || cmd[0] == "s" || cmd[0] == "next":
			return
		case cmd[0] == "c" || cmd[0] == "continue" || cmd[0] == "q":
			s.run = true
			return
		case cmd[0] == "n" && len(cmd) == 2:
			if k, err := strconv.Atoi(cmd[1]); err == nil && k > 0 {
				s.skip = k
				return
			}
			fallthrough
		default:
			fmt.Fprintln(s.out, "commands: Enter/s = next event, n N = next N events, c = continue")
		}
	}
}

func (s *Stepper) printConns() {
	conns := services.StackConns(s.pair.Client)
	if len(conns) == 0 {
		return
	}
	tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  client\tpeer\tstate\trto\trtt\tcwnd\tretrans")
	for _, c := range conns {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%d\t%d\n", c.Local, c.Remote, c.State,
			c.RTO.Round(time.Millisecond), c.RTT.Round(time.Microsecond), c.SndCwnd, c.Retransmits)
	}
	tw.Flush()
}

func fmtTime(d time.Duration) string { return fmt.Sprintf("%10.6fs", d.Seconds()) }

func shortName(name string) string {
	return strings.TrimPrefix(name, "gvisor.dev/gvisor/pkg/tcpip/transport/")
}

func arrow(d packet.Direction) string {
	if d == packet.In {
		return "client→peer"
	}
	return "peer→client"
}

// tcpFlags writes TCP flags in tcpdump's bracketed notation ("[S.]").
func tcpFlags(f uint8) string { return "[" + packet.FlagString(f) + "]" }
