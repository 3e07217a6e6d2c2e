package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/unplug-dev/unplug/internal/reference"
	"github.com/unplug-dev/unplug/scenarios"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
)

// execRefOptions are the flags of `unplug exec` --reference cares about.
type execRefOptions struct {
	faults      []fault.Spec
	forwards    []services.Forward
	transparent bool
	json        bool
	sysctls     map[string]string
}

// checkExecReference validates exec --reference before anything runs:
// every fault rule must translate to iptables, the peer's own services
// only (no forwards, no transparent routing), a table (no --json), and
// root with iptables.
func checkExecReference(o execRefOptions) error {
	if len(o.forwards) > 0 || o.transparent {
		return usagef("--reference runs the program against the peer's own services: drop --forward and --transparent")
	}
	if o.json {
		return usagef("--reference prints a table beside the report; drop --json")
	}
	if _, err := reference.Translate(o.faults); err != nil {
		return usagef("%v", err)
	}
	if err := reference.Available(); err != nil {
		return fmt.Errorf("--reference: %w", err)
	}
	return nil
}

// execReferenceRules, when set (tests only), changes the fault rules the
// reference lab gets: a rule only unplug applies must make the verdict
// fail.
var execReferenceRules func([]fault.Spec) []fault.Spec

// runExecReference runs the program a second time in the reference lab
// (reference.ExecLab: the same addresses and services on kernel sockets,
// the fault rules as iptables rules on the same schedule, the same
// sysctls), prints the two reports side by side per connection on out,
// and returns an exit-1 error when they disagree. The second run's
// output goes to stderr; it gets no stdin.
func runExecReference(ctx context.Context, o execRefOptions, eo scenarios.ExecOptions, got *scenarios.Report, out, stderr io.Writer) error {
	rules := o.faults
	if execReferenceRules != nil {
		rules = execReferenceRules(rules)
	}
	lab, err := reference.NewExecLab(ctx, "unplug-xref", rules, o.sysctls)
	if err != nil {
		return fmt.Errorf("--reference: %w", err)
	}
	defer lab.Close()
	fmt.Fprintf(stderr, "unplug: --reference: running %s again in namespaces %s and %s (iptables instead of unplug; its output follows)\n",
		filepath.Base(eo.Argv[0]), lab.Client, lab.Server)
	eo.Stdin, eo.Stdout, eo.Stderr = nil, stderr, stderr
	eo.Observer, eo.Report, eo.Expect = nil, true, nil
	res, err := scenarios.ExecIn(ctx, eo, lab)
	if err != nil {
		return fmt.Errorf("--reference: %w", err)
	}
	ref := res.Report
	fmt.Fprintf(out, "\nreference  the same program in two namespaces on a veth pair (%s, %s): the peer's services on kernel sockets at 198.18.0.2,\n", lab.Client, lab.Server)
	fmt.Fprintf(out, "           the fault rules as %s rules on the same schedule, the same sysctls in the program's namespace\n", filepath.Base(lab.Iptables))
	for _, a := range lab.Applied() {
		when := "never placed"
		if a.Placed {
			when = fmt.Sprintf("in place %.3f s", a.On.Seconds())
			if a.AtEnd {
				when += fmt.Sprintf(" to the end (%.3f s)", a.Off.Seconds())
			} else {
				when += fmt.Sprintf(" to %.3f s", a.Off.Seconds())
			}
		}
		check := fmt.Sprintf("iptables counted %d", a.Counter)
		if a.Counter != a.Counted {
			check += " (a packet crossed while iptables changed)"
		}
		fmt.Fprintf(out, "           rule %d  %s  %s; dropped %d, %s\n", a.Rule.Fault, a.Rule, when, a.Counted, check)
	}
	fmt.Fprintf(out, "           per connection, in the order they opened; times since the program's last packet before its first retransmission or probe\n")
	fmt.Fprintf(out, "           (since the first SYN without one); tolerance: timer-wheel rounding + 2 jiffies per firing (HZ=250)\n\n")
	rows := reference.CompareExec(ref, got)
	io.WriteString(out, reference.FormatRows(rows))
	if st := ref.Exec.Stopped; st != "" && !strings.HasPrefix(st, "--timeout") {
		fmt.Fprintf(out, "\nreference  INTERRUPTED (%s): no verdict\n", st)
		return exitCodeError{code: exitFail, msg: "the reference run was interrupted: no verdict"}
	}
	if !reference.Agree(rows) {
		fmt.Fprintln(out, "\nreference  DIFFERS — see the rows marked DIFFERS")
		return exitCodeError{code: exitFail, msg: "unplug disagrees with the iptables reference"}
	}
	fmt.Fprintln(out, "\nreference  AGREES — every connection ended the same way, every time within tolerance")
	return nil
}

// stoppedBySignal reports whether the first run was stopped by a signal
// passed on (not by --timeout): then there is no reference run.
func stoppedBySignal(rep *scenarios.Report) bool {
	return rep != nil && rep.Exec != nil && rep.Exec.Stopped != "" && !strings.HasPrefix(rep.Exec.Stopped, "--timeout")
}
