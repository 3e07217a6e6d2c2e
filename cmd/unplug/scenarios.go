package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/unplug-dev/unplug/scenarios"
)

func runScenarios(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("scenarios", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := listScenarios(stdout); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "\nRun one with `unplug run NAME [--PARAM VALUE]... [--json] [--pcap F] [--svg F] [--expect ERRNO|recovered|survived] [--clock virtual]`.")
	return nil
}

// listScenarios writes the catalog: each scenario with its parameters.
func listScenarios(stdout io.Writer) error {
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, sc := range scenarios.Catalog() {
		where := ""
		if sc.Kernel {
			where = " (real clock only)"
		}
		fmt.Fprintf(tw, "%s\t%s%s\n", sc.Name, sc.Summary, where)
		for _, p := range sc.Params {
			fmt.Fprintf(tw, "\t  --%s %s\t%s\n", p.Name, p.Default, p.Help)
		}
	}
	return tw.Flush()
}

// runExit says what `unplug run` exits with.
const runExit = "Exit status: 0 when the verdict is PASS, 1 when it is FAIL or the run failed, 2 on a usage error;\n" +
	"with --expect OUTCOME: 0 when the run ends so, 1 if not (the verdict is still printed)."

// addRunFlags defines the flags every scenario takes.
func addRunFlags(fs *pflag.FlagSet, f *runFlags) {
	fs.BoolVar(&f.json, "json", false, "print the report as JSON (schema: docs/report-schema.md)")
	fs.StringVar(&f.pcap, "pcap", "", "write every packet, with drop comments, to this pcapng file")
	fs.StringVar(&f.svg, "svg", "", "draw the time-sequence graph to this SVG file")
	fs.StringVar(&f.svgTime, "svg-time", "auto", "time axis of --svg: linear, log, or auto (log when the early events would crowd the left edge)")
	fs.StringVar(&f.expect, "expect", "", "exit 0 if the run ends so (an errno name, recovered, survived or connected), 1 if not")
	fs.StringVar(&f.clock, "clock", scenarios.ClockReal, "real (host kernel client, real time) or virtual (gVisor client, simulated time)")
	fs.Uint64Var(&f.seed, "seed", 1, "seed for loss and jitter (same seed, same run in virtual time)")
	fs.DurationVar(&f.linkDelay, "link-delay", 0, "one-way delay of the virtual link (--clock virtual), for realistic RTTs and RTOs")
	fs.BoolVar(&f.step, "step", false, "virtual clock: stop at every timer firing and packet; Enter = next, n N = next N, c = continue")
	fs.StringVar(&f.stepScript, "step-script", "", "like --step, reading the commands from this file")
	fs.Var(&f.faults, "fault", "extra fault rule installed at the start (repeatable)")
	fs.BoolVar(&f.reference, "reference", false, "also run the scenario the seed's way (iptables DROP between two namespaces; root) and print both side by side; exit 1 if they disagree")
}

type runFlags struct {
	json, step        bool
	reference         bool
	pcap, svg, expect string
	svgTime           string
	clock, stepScript string
	seed              uint64
	linkDelay         time.Duration
	faults            faultsValue
}

func runScenario(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fs := newFlagSet("run", stderr)
			addRunFlags(fs, &runFlags{})
			printHelp(stderr, helpText{usage: "unplug run NAME [--PARAM VALUE]... [flags]",
				intro: "Runs one experiment in a private network namespace (no root needed) and prints its report.\n" + runExit},
				fs.FlagUsages())
			fmt.Fprintln(stderr, "\nscenarios (each takes its --PARAM VALUE flags; `unplug run NAME --help` shows one):")
			if err := listScenarios(stderr); err != nil {
				return err
			}
			return pflag.ErrHelp
		}
		return usagef("run needs a scenario name first; `unplug scenarios` lists them: %s", strings.Join(scenarios.Names(), ", "))
	}
	sc, ok := scenarios.Lookup(args[0])
	if !ok {
		return usagef("unknown scenario %q; `unplug scenarios` lists them: %s", args[0], strings.Join(scenarios.Names(), ", "))
	}
	fs := newFlagSet("run "+sc.Name, stderr)
	var f runFlags
	addRunFlags(fs, &f)
	params := map[string]*string{}
	for _, p := range sc.Params {
		params[p.Name] = fs.String(p.Name, p.Default, p.Help)
	}
	where := ""
	if sc.Kernel {
		where = " (real clock only)"
	}
	fs.Usage = func() {
		printHelp(fs.Output(), helpText{usage: "unplug run " + sc.Name + " [--PARAM VALUE]... [flags]",
			intro: sc.Name + ": " + sc.Summary + where + "\n" + runExit}, fs.FlagUsages())
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("run %s: unexpected argument %q (parameters are flags: --NAME VALUE)", sc.Name, fs.Arg(0))
	}
	values := map[string]string{}
	for name, v := range params {
		if fs.Changed(name) {
			values[name] = *v
		}
	}
	ps, err := scenarios.ParseParams(sc, values)
	if err != nil {
		return usageError{err}
	}
	if f.expect != "" {
		if err := scenarios.ValidateExpect(f.expect); err != nil {
			return usageError{fmt.Errorf("--expect: %w", err)}
		}
	}
	if f.clock != scenarios.ClockReal && f.clock != scenarios.ClockVirtual {
		return usagef("--clock %q: use real or virtual", f.clock)
	}
	if (f.step || f.stepScript != "" || fs.Changed("link-delay")) && f.clock != scenarios.ClockVirtual {
		return usagef("--step, --step-script and --link-delay need --clock virtual")
	}
	if f.clock == scenarios.ClockVirtual && sc.Kernel {
		return usagef("scenario %s shows the host kernel's behaviour; run it with --clock real", sc.Name)
	}
	svgOpts := scenarios.SVGOptions{Time: f.svgTime}
	if f.svgTime == "auto" {
		svgOpts.Time = scenarios.SVGTimeAuto
	}
	if svgOpts.Time != scenarios.SVGTimeAuto && svgOpts.Time != scenarios.SVGTimeLinear && svgOpts.Time != scenarios.SVGTimeLog {
		return usagef("--svg-time %q: use auto, linear or log", f.svgTime)
	}
	if f.reference {
		if err := checkReference(sc.Name, &f, ps); err != nil {
			return err
		}
	}
	var svg *os.File
	if f.svg != "" { // fail before running, not after
		if svg, err = os.Create(f.svg); err != nil {
			return fmt.Errorf("cannot write --svg %s: %w", f.svg, errors.Unwrap(err))
		}
		defer svg.Close()
	}
	opts := scenarios.Options{Clock: f.clock, Seed: f.seed, PcapPath: f.pcap, LinkDelay: f.linkDelay}
	for _, sp := range f.faults {
		opts.Faults = append(opts.Faults, sp.String())
	}
	if isTerminal(stderr) {
		opts.Progress = stderr
	}
	switch {
	case f.stepScript != "":
		script, err := os.Open(f.stepScript)
		if err != nil {
			return usagef("--step-script: %v", err)
		}
		defer script.Close()
		opts.StepIn, opts.StepOut = script, stderr
	case f.step:
		opts.StepIn, opts.StepOut = os.Stdin, stderr
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, runErr := scenarios.Run(ctx, sc.Name, ps, opts)
	if rep == nil {
		if svg != nil {
			os.Remove(f.svg)
		}
		return runErr
	}
	if err := writeReport(stdout, rep, f.json, svg, f.svg, svgOpts); err != nil {
		return err
	}
	if runErr != nil {
		return runErr
	}
	if f.reference {
		if err := runReference(ctx, sc.Name, ps, rep, stdout); err != nil {
			return err
		}
	}
	if f.expect != "" {
		met, _ := rep.Met(f.expect)
		if !met {
			return exitCodeError{code: exitFail, msg: fmt.Sprintf("expected %s, got %s", f.expect, rep.Outcome)}
		}
		return nil
	}
	if rep.Verdict != scenarios.VerdictPass {
		// The report (printed above) names each unmet expectation.
		return exitCodeError{code: exitFail}
	}
	return nil
}

// isTerminal reports whether w is a terminal (for the live progress line).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
