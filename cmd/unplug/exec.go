package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unplug-dev/unplug/internal/capture"
	"github.com/unplug-dev/unplug/scenarios"
	"github.com/unplug-dev/unplug/stack/fault"
)

// sysctlsValue is the repeatable --sysctl NAME=VALUE flag (net.* only:
// they are the per-namespace ones).
type sysctlsValue map[string]string

func (v sysctlsValue) String() string {
	var parts []string
	for k, val := range v {
		parts = append(parts, k+"="+val)
	}
	return strings.Join(parts, ",")
}

func (v sysctlsValue) Set(s string) error {
	name, val, ok := strings.Cut(s, "=")
	name = strings.TrimSpace(name)
	if !ok || name == "" || val == "" {
		return fmt.Errorf("%q: write NAME=VALUE, e.g. net.ipv4.tcp_retries2=5", s)
	}
	if !strings.HasPrefix(name, "net.") {
		return fmt.Errorf("%q: only net.* sysctls are per network namespace; the host's are never changed", name)
	}
	v[name] = val
	return nil
}

func (v sysctlsValue) Type() string { return "NAME=VALUE" }

// expectsValue is the repeatable --expect of exec.
type expectsValue []scenarios.ExecExpect

func (v *expectsValue) String() string {
	var parts []string
	for _, e := range *v {
		parts = append(parts, e.Raw)
	}
	return strings.Join(parts, ",")
}

func (v *expectsValue) Set(s string) error {
	e, err := scenarios.ParseExecExpect(s)
	if err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), fmt.Sprintf("--expect %q: ", s)))
	}
	*v = append(*v, e)
	return nil
}

func (v *expectsValue) Type() string { return "GATE" }

// retries2Value is --retries2 N: shorthand for the tcp_retries2 sysctl.
type retries2Value struct{ sysctls sysctlsValue }

func (v retries2Value) String() string { return v.sysctls["net.ipv4.tcp_retries2"] }

func (v retries2Value) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return fmt.Errorf("%q: want a count of 0 or more (the kernel default is 15)", s)
	}
	v.sysctls["net.ipv4.tcp_retries2"] = strconv.Itoa(n)
	return nil
}

func (v retries2Value) Type() string { return "N" }

func runExec(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	peerProcs()
	fs := newFlagSet("exec", stderr)
	var (
		faults      faultsValue
		forwards    forwardsValue
		sysctls     = sysctlsValue{}
		expects     expectsValue
		transparent bool
		pcapPath    string
		logPackets  bool
		seed        uint64
		report      bool
		asJSON      bool
		svgPath     string
		reportFile  string
		timeout     time.Duration
		grace       time.Duration
		withRef     bool
		busyPoll    time.Duration
	)
	fs.Var(&faults, "fault", "fault rule on the link (repeatable; after= and for= count from the program's start)")
	fs.Var(&forwards, "forward", "splice connections to PORT on the peer to HOST:PORT in your namespace (repeatable)")
	fs.BoolVar(&transparent, "transparent", false, "route every address through the link and re-dial each TCP connection's real destination")
	fs.StringVar(&pcapPath, "pcap", "", "write every packet, with drop comments, to this pcapng file")
	fs.BoolVar(&logPackets, "log-packets", false, "print one line per packet on stderr")
	fs.Uint64Var(&seed, "seed", 1, "seed for loss and jitter")
	fs.Var(sysctls, "sysctl", "set a net.* sysctl inside the private namespace (repeatable)")
	fs.Var(retries2Value{sysctls}, "retries2", "shorthand for --sysctl net.ipv4.tcp_retries2=N")
	fs.BoolVar(&report, "report", false, "after the program exits, report every TCP connection it made: what happened, why, and what its settings predict")
	fs.BoolVar(&asJSON, "json", false, "the report as JSON (implies --report)")
	fs.StringVar(&svgPath, "svg", "", "draw the report's time-sequence graph to this SVG file (implies --report)")
	fs.StringVar(&reportFile, "report-file", "", "write the report to this file instead of stderr (implies --report)")
	fs.Var(&expects, "expect", "gate for CI: detect<DURATION or reconnected (repeatable, implies --report; exit 0 met, 1 not)")
	fs.DurationVar(&timeout, "timeout", 0, "stop the program after this long (SIGTERM, then SIGKILL after --grace); its hanging connections are reported")
	fs.DurationVar(&grace, "grace", scenarios.DefaultGrace, "how long the program may take to exit after SIGTERM/SIGINT before it is killed")
	fs.BoolVar(&withRef, "reference", false, "(root) run the program again with iptables in two namespaces instead of unplug, and compare the reports per connection (exit 0 agree, 1 differ)")
	fs.DurationVar(&busyPoll, "busy-poll", defaultBusyPoll, busyPollUsage)
	fs.SetInterspersed(false)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return usagef("exec needs a program: unplug exec [FLAGS] -- CMD [ARGS...]")
	}
	if err := checkBusyPoll(busyPoll); err != nil {
		return err
	}
	defer startBusyPoll(busyPoll, stderr)()
	refOpts := execRefOptions{faults: faults, forwards: forwards, transparent: transparent, json: asJSON, sysctls: sysctls}
	if withRef {
		if err := checkExecReference(refOpts); err != nil {
			return err
		}
	}
	report = report || asJSON || svgPath != "" || reportFile != "" || len(expects) > 0 || withRef
	out := stderr
	if reportFile != "" {
		f, err := os.Create(reportFile)
		if err != nil {
			return fmt.Errorf("cannot write --report-file %s: %w", reportFile, errors.Unwrap(err))
		}
		defer f.Close()
		out = f
	}
	var svg *os.File
	if svgPath != "" { // fail before running, not after
		f, err := os.Create(svgPath)
		if err != nil {
			return fmt.Errorf("cannot write --svg %s: %w", svgPath, errors.Unwrap(err))
		}
		defer f.Close()
		svg = f
	}
	var obs []fault.Observer
	if pcapPath != "" {
		w, err := capture.Create(pcapPath)
		if err != nil {
			return err
		}
		w.OnError = func(err error) { fmt.Fprintf(stderr, "unplug: capture stopped, the program continues: %v\n", err) }
		defer w.Close()
		obs = append(obs, w)
	}
	if logPackets {
		obs = append(obs, capture.NewLogger(stderr, time.Now()))
	}
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT)
	defer func() { // after the reference run too: it gets them as well
		signal.Stop(signals)
		close(signals)
	}()
	eo := scenarios.ExecOptions{
		Argv: argv, Faults: faults, Forwards: forwards, Transparent: transparent, Seed: seed,
		Observer: fault.Join(obs...), Stdin: os.Stdin, Stdout: stdout, Stderr: stderr,
		Sysctls: sysctls, Signals: passOn(signals), Grace: grace, Timeout: timeout,
		Report: report, Expect: expects,
	}
	res, err := scenarios.Exec(ctx, eo)
	if err != nil {
		if res.Code != 0 && res.Report == nil { // the program could not start (127: not found)
			return exitCodeError{code: res.Code, msg: err.Error()}
		}
		return err
	}
	if rep := res.Report; rep != nil {
		if err := writeReport(out, rep, asJSON, svg, svgPath, scenarios.SVGOptions{}); err != nil {
			return err
		}
		if withRef {
			if stoppedBySignal(rep) {
				return exitCodeError{code: exitFail, msg: "the program was stopped by a signal: no reference run"}
			}
			if err := runExecReference(ctx, refOpts, eo, rep, out, stderr); err != nil {
				return err
			}
		}
		if len(expects) > 0 {
			if rep.Verdict != scenarios.VerdictPass {
				var failed []string
				for _, e := range rep.Expectations {
					if !e.Pass {
						failed = append(failed, e.Name+": "+e.Measured)
					}
				}
				return exitCodeError{code: exitFail, msg: "expectation not met: " + strings.Join(failed, "; ")}
			}
			return nil
		}
	}
	if res.Code != 0 && !withRef {
		return exitCodeError{code: res.Code}
	}
	return nil
}

// passOn forwards unplug's signals to the program, except SIGINT and
// SIGQUIT typed at the terminal: when unplug is in the terminal's
// foreground process group, the program (in the same group) got them from
// the terminal already.
func passOn(in <-chan os.Signal) <-chan os.Signal {
	out := make(chan os.Signal, 4)
	go func() {
		for sig := range in {
			if (sig == syscall.SIGINT || sig == syscall.SIGQUIT) && terminalForeground() {
				continue
			}
			select {
			case out <- sig:
			default: // nobody is listening any more, or four are pending
			}
		}
	}()
	return out
}

// terminalForeground reports whether unplug's process group is the
// foreground group of the terminal on stdin.
func terminalForeground() bool {
	pgrp, err := unix.IoctlGetInt(int(os.Stdin.Fd()), unix.TIOCGPGRP)
	return err == nil && pgrp == unix.Getpgrp()
}
