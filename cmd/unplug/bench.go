package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"

	"github.com/unplug-dev/unplug/bench"
)

// runBench is `unplug bench`: every measurement against its baseline in
// namespaces of its own, as a table (or JSON); exit 1 when a target is
// missed.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", stderr)
	var (
		opts       bench.Options
		asJSON     bool
		cpuProfile string
	)
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	fs.BoolVar(&opts.Quick, "quick", false, "short runs and small samples: a first look, not a result")
	fs.DurationVar(&opts.Duration, "duration", 0, "length of each bulk transfer (default 2s, --quick 300ms)")
	fs.IntVar(&opts.Conns, "conns", 0, "idle connections to hold (default 10000, --quick 200)")
	fs.IntVar(&opts.MTU, "mtu", 1500, "MTU of the TUN link")
	fs.BoolVar(&opts.NoOffload, "no-offload", false, "use the plain TUN device (one packet per system call) instead of TSO offload")
	fs.StringSliceVar(&opts.Only, "only", nil, "run only these rows: "+strings.Join(bench.AllRows, ", "))
	fs.StringVar(&opts.Toxiproxy, "toxiproxy", "", "toxiproxy-server binary for the forwarding rows (default: toxiproxy-server on PATH)")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("bench takes no arguments, got %q", fs.Arg(0))
	}
	for _, row := range opts.Only {
		if !slices.Contains(bench.AllRows, row) {
			return usagef("--only %q: no such row; pick from %s", row, strings.Join(bench.AllRows, ", "))
		}
	}
	if opts.MTU < 1280 || opts.MTU > 65535 {
		return usagef("--mtu %d out of range; use 1280-65535", opts.MTU)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: find the unplug binary to time serve: %w", err)
	}
	opts.ServeCommand = []string{exe, "serve"}
	if !asJSON {
		opts.Progress = stderr
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("bench: start CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, opts)
	if err != nil {
		return err
	}
	if asJSON {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteTable(stdout)
	}
	if err != nil {
		return fmt.Errorf("bench: write report: %w", err)
	}
	if rep.Failed() {
		return exitCodeError{code: exitFail, msg: "bench: a measurement missed its target (see the table)"}
	}
	return nil
}
