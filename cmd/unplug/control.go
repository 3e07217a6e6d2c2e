package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/unplug-dev/unplug/scenarios"
	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/control"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
)

// Control operations understood by serve: stack/control's, and the
// per-connection report of serve --record.
const (
	opStatus = control.OpStatus
	opReport = "report"
)

// registerControl maps the control operations onto the running peer. rec,
// if not nil, records every connection for `unplug report` and hears of
// every rule change.
func registerControl(srv *control.Server, peer *stack.Peer, rec *scenarios.PeerRecorder, forwards []services.Forward) {
	if rec == nil {
		control.HandlePeer(srv, peer)
	} else {
		control.HandlePeerWatched(srv, peer, rec)
	}
	srv.Handle(opReport, func(_ context.Context, args []string) (any, error) {
		if rec == nil {
			return nil, errors.New("this serve keeps no per-connection record: restart it with `unplug serve --record`")
		}
		var expects []scenarios.ExecExpect
		for _, a := range args {
			e, err := scenarios.ParseExecExpect(a)
			if err != nil {
				return nil, err
			}
			expects = append(expects, e)
		}
		return rec.Report(expects, forwards), nil
	})
}

func runFault(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	defer func() { err = controlAdvice(err) }()
	fs := newFlagSet("fault", stderr)
	path := fs.String("control", control.DefaultPath(), "control socket of the running serve")
	jsonOut := fs.Bool("json", false, "print JSON")
	fs.SetInterspersed(false)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return usagef("fault needs a subcommand: add SPEC..., list, rm ID..., clear")
	}
	// Flags may also follow the subcommand.
	sub := newFlagSet("fault "+rest[0], stderr)
	sub.AddFlagSet(fs)
	if err := parseFlags(sub, rest[1:]); err != nil {
		return err
	}
	operands := sub.Args()
	client := control.Client{Path: *path}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	switch rest[0] {
	case "add":
		if len(operands) == 0 {
			return usagef("fault add needs a SPEC, e.g. unplug fault add 'drop dir=in for=3s'")
		}
		for _, a := range operands { // reject locally first: same parser as serve
			if _, err := fault.ParseSpec(a); err != nil {
				return usageError{unquotedHint(err, operands)}
			}
		}
		ids, err := client.AddFault(ctx, operands...)
		if err != nil {
			return err
		}
		for i, id := range ids {
			fmt.Fprintf(stdout, "rule %d: %s\n", id, operands[i])
		}
	case "list", "ls":
		rules, err := client.Faults(ctx)
		if err != nil {
			return err
		}
		if *jsonOut {
			return writeJSON(stdout, rules)
		}
		printRules(stdout, rules)
	case "rm", "remove", "del":
		if len(operands) == 0 {
			return usagef("fault rm needs rule ids (see `unplug fault list`)")
		}
		ids := make([]int, len(operands))
		for i, a := range operands {
			id, err := strconv.Atoi(a)
			if err != nil {
				return usagef("rule id %q is not a number (see `unplug fault list`)", a)
			}
			ids[i] = id
		}
		if err := client.RemoveFault(ctx, ids...); err != nil {
			return err
		}
	case "clear":
		n, err := client.ClearFaults(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed %d rules\n", n)
	default:
		return usagef("unknown fault subcommand %q; use add, list, rm or clear", rest[0])
	}
	return nil
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	defer func() { err = controlAdvice(err) }()
	fs := newFlagSet("status", stderr)
	path := fs.String("control", control.DefaultPath(), "control socket of the running serve")
	jsonOut := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := control.Client{Path: *path}.Status(ctx)
	if err != nil {
		return err
	}
	if *jsonOut {
		return writeJSON(stdout, st)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LOCAL\tREMOTE\tSTATE\tRTT\tRTO\tCWND\tRETRANS\tTIMEOUTS")
	for _, c := range st.Conns {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", c.Local, c.Remote, c.State,
			c.RTT.Round(time.Microsecond), c.RTO.Round(time.Millisecond), c.SndCwnd, c.Retransmits, c.Timeouts)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "\npackets: in %d, out %d, dropped %d, delayed %d (pending %d)\n",
		st.Link.In, st.Link.Out, st.Link.Dropped, st.Link.Delayed, st.Link.Pending)
	if bp := st.BusyPoll; bp != nil {
		fmt.Fprintf(stdout, "busy poll: %s after traffic; %d windows, %d polls, %d parks\n", bp.Window, bp.Windows, bp.Polls, bp.Parks)
	}
	if len(st.Rules) > 0 {
		fmt.Fprintln(stdout)
		printRules(stdout, st.Rules)
	}
	return nil
}

func printRules(w io.Writer, rules []fault.RuleStatus) {
	if len(rules) == 0 {
		fmt.Fprintln(w, "no fault rules")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tMATCHED\tDROPPED\tDELAYED\tSPEC")
	for _, r := range rules {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%s%s\n", r.ID, r.State, r.Matched, r.Dropped, r.Delayed, r.Spec, otherCounters(r))
	}
	tw.Flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// otherCounters lists the counters of the TCP-aware actions that are not
// zero, for the rules table: "  (rejected 3, corrupted 1)".
func otherCounters(r fault.RuleStatus) string {
	var parts []string
	for _, c := range []struct {
		name string
		n    uint64
	}{
		{"rejected", r.Rejected}, {"reset", r.Reset}, {"duplicated", r.Duplicated}, {"reordered", r.Reordered},
		{"corrupted", r.Corrupted}, {"tail-dropped", r.TailDropped}, {"healed", r.Healed},
	} {
		if c.n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", c.name, c.n))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "  (" + strings.Join(parts, ", ") + ")"
}

// unquotedHint adds the likely fix to a spec error when the rule was split
// into several arguments by the shell (fault add drop for=3s): each rule is
// one argument, so the words must be quoted together.
func unquotedHint(err error, operands []string) error {
	if len(operands) < 2 {
		return err
	}
	joined := strings.Join(operands, " ")
	if _, jerr := fault.ParseSpec(joined); jerr != nil {
		return fmt.Errorf("%w (each rule is one argument: quote it, e.g. unplug fault add 'drop for=3s')", err)
	}
	return fmt.Errorf("%w: each rule is one argument; quote it: unplug fault add '%s'", err, joined)
}

// controlAdvice adds the command line's fix to the control package's
// errors: which flag chooses the socket, and which command starts a server.
func controlAdvice(err error) error {
	switch {
	case errors.Is(err, control.ErrNoServer):
		return fmt.Errorf("%w (`unplug serve`, --control PATH)", err)
	case errors.Is(err, control.ErrSocketPath):
		return fmt.Errorf("%w (--control PATH)", err)
	}
	return err
}
