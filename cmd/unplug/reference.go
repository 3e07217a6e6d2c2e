package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	"github.com/unplug-dev/unplug/internal/reference"
	"github.com/unplug-dev/unplug/scenarios"
)

// checkReference validates --reference before anything runs: the scenario
// must be one the reference covers, on the real clock, as a table, with
// root and iptables at hand.
func checkReference(name string, f *runFlags, ps scenarios.Params) error {
	if !slices.Contains(reference.Scenarios, name) {
		return usagef("--reference covers %s, not %s", strings.Join(reference.Scenarios, ", "), name)
	}
	if f.clock != scenarios.ClockReal {
		return usagef("--reference compares with the kernel: use --clock real")
	}
	if f.json {
		return usagef("--reference prints a table beside the report; drop --json")
	}
	if name == "syn-timeout" && ps.Duration("outage") > 0 {
		return usagef("--reference runs syn-timeout with the link down for good: drop --outage")
	}
	if err := reference.Available(); err != nil {
		return fmt.Errorf("--reference: %w", err)
	}
	return nil
}

// runReference runs the scenario the seed's way (two namespaces on a veth
// pair, iptables DROP in the server's), prints it beside unplug's report
// and returns an exit-1 error when they disagree.
func runReference(ctx context.Context, name string, ps scenarios.Params, rep *scenarios.Report, stdout io.Writer) error {
	lab, err := reference.NewLab(ctx, "unplug-ref")
	if err != nil {
		return fmt.Errorf("--reference: %w", err)
	}
	defer lab.Close()
	ref, err := lab.Run(ctx, name, ps)
	if err != nil {
		return fmt.Errorf("--reference: %w", err)
	}
	rows := reference.Compare(ref, reference.FromReport(rep))
	fmt.Fprintf(stdout, "\nreference  the seed's method: namespaces %s and %s on a veth pair, `%s -A INPUT -p tcp --dport %d -j DROP` in the server's;\n",
		lab.Client, lab.Server, filepath.Base(lab.Iptables), reference.ServerPort)
	fmt.Fprintf(stdout, "           the client makes the scenario's calls with its socket options and sysctls\n")
	fmt.Fprintf(stdout, "           times since the last packet before the first retransmission or probe; tolerance: timer-wheel rounding + 2 jiffies per firing (HZ=250)\n\n")
	io.WriteString(stdout, reference.FormatRows(rows))
	if !reference.Agree(rows) {
		fmt.Fprintln(stdout, "\nreference  DIFFERS — see the rows marked DIFFERS")
		return exitCodeError{code: exitFail, msg: "unplug disagrees with the iptables reference"}
	}
	fmt.Fprintln(stdout, "\nreference  AGREES — same mechanism, every time within tolerance")
	return nil
}
