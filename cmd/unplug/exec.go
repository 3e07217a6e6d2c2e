package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/unplug-dev/unplug/scenarios"
	"github.com/unplug-dev/unplug/stack/capture"
	"github.com/unplug-dev/unplug/stack/fault"
)

func runExec(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("exec", stderr)
	var (
		faults      faultsValue
		forwards    forwardsValue
		transparent bool
		pcapPath    string
		logPackets  bool
		seed        uint64
	)
	fs.Var(&faults, "fault", "fault rule on the link (repeatable; after= and for= count from the program's start)")
	fs.Var(&forwards, "forward", "splice connections to PORT on the peer to HOST:PORT in your namespace (repeatable)")
	fs.BoolVar(&transparent, "transparent", false, "route every address through the link and re-dial each TCP connection's real destination")
	fs.StringVar(&pcapPath, "pcap", "", "write every packet, with drop comments, to this pcapng file")
	fs.BoolVar(&logPackets, "log-packets", false, "print one line per packet on stderr")
	fs.Uint64Var(&seed, "seed", 1, "seed for loss and jitter")
	fs.SetInterspersed(false)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return usagef("exec needs a program: unplug exec [--fault SPEC]... -- CMD [ARGS...]")
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
	// The program gets the terminal's signals itself; unplug only tears
	// down once it has exited.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM)
	defer stop()
	signal.Ignore(os.Interrupt)
	defer signal.Reset(os.Interrupt)
	code, err := scenarios.Exec(ctx, scenarios.ExecOptions{
		Argv: argv, Faults: faults, Forwards: forwards, Transparent: transparent, Seed: seed,
		Observer: fault.Join(obs...), Stdin: os.Stdin, Stdout: stdout, Stderr: stderr,
	})
	if err != nil {
		if code != 0 { // the program could not start (127: not found)
			return exitCodeError{code: code, msg: err.Error()}
		}
		return err
	}
	if code != 0 {
		return exitCodeError{code: code}
	}
	return nil
}
