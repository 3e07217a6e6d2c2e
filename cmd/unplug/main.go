// Command unplug shows, with evidence, what happens to a TCP connection when
// the network suddenly drops: a gVisor netstack on a TUN device is the peer,
// and a fault layer in its link drops, loses or delays packets by rule.
//
// Subcommands: serve, fault, status, scenarios, run, exec. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"

	"github.com/unplug-dev/unplug/bench"
	"github.com/unplug-dev/unplug/tun"
)

// Exit codes: 0 success (or expectation met), 1 failure (or expectation not
// met), 2 usage error.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// usageError marks errors caused by bad command-line input (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// exitCodeError carries a specific exit code (exec's child status,
// run's unmet expectation) with an optional message.
type exitCodeError struct {
	code int
	msg  string
}

func (e exitCodeError) Error() string { return e.msg }

func main() {
	tun.RunAgentIfRequested()
	bench.RunUpstreamsIfRequested()
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"serve", "run the peer on a TUN device (198.18.0.2) with its fault layer", runServe},
		{"fault", "add, list, remove or clear fault rules on a running serve", runFault},
		{"status", "show a running serve's connections, rules and counters", runStatus},
		{"report", "report every connection a running serve --record has seen: endings, theory, --expect gates", runReport},
		{"scenarios", "list the experiments `unplug run` knows", runScenarios},
		{"run", "run one experiment in a private namespace and report", runScenario},
		{"exec", "run a program whose only network is the faulty link to the peer", runExec},
		{"bench", "measure the peer against kernel loopback in a private namespace", runBench},
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) >= 2 && args[0] == "help" { // unplug help CMD [SUB] = unplug CMD [SUB] --help
		args = append(args[1:], "--help")
	}
	switch {
	case len(args) == 0:
		usage(stderr)
		return exitUsage
	case args[0] == "-h" || args[0] == "--help" || args[0] == "help":
		usage(stdout)
		return exitOK
	case args[0] == "--version" || args[0] == "version":
		fmt.Fprintln(stdout, version())
		return exitOK
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		return report(err, stderr)
	}
	fmt.Fprintf(stderr, "unplug: unknown command %q; run `unplug help` for the list\n", args[0])
	return exitUsage
}

// report prints err as one line and maps it to an exit code.
func report(err error, stderr io.Writer) int {
	var ue usageError
	var ce exitCodeError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, pflag.ErrHelp):
		return exitOK
	case errors.As(err, &ce):
		if ce.msg != "" {
			fmt.Fprintf(stderr, "unplug: %s\n", ce.msg)
		}
		return ce.code
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "unplug: %v\n", err)
		return exitUsage
	}
	fmt.Fprintf(stderr, "unplug: %v\n", err)
	return exitFail
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: unplug COMMAND [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun `unplug help COMMAND` (or `unplug COMMAND --help`) for a command's flags,\n`unplug --version` for the build.")
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name string, stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet("unplug "+name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	return fs
}

// parseFlags parses args, turning flag errors into one-line usage errors.
func parseFlags(fs *pflag.FlagSet, args []string) error {
	if fs.Usage == nil {
		fs.Usage = func() { printHelp(fs.Output(), helpFor(fs.Name()), fs.FlagUsages()) }
	}
	out := fs.Output()
	fs.SetOutput(io.Discard) // we print our own one-line error
	err := fs.Parse(args)
	fs.SetOutput(out)
	if errors.Is(err, pflag.ErrHelp) {
		fs.Usage()
		return err
	}
	if err != nil {
		return usagef("%s: %v (see `%s --help`)", fs.Name(), err, fs.Name())
	}
	return nil
}
