package scenarios

import (
	"io"
	"os"
	"time"

	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
)

// ExecOptions configure Exec: the program, the faulty link it gets as its
// only network, and what to record.
type ExecOptions struct {
	// Argv is the program and its arguments.
	Argv []string
	// Faults are installed on the link before the program starts; after=
	// and for= count from then.
	Faults []fault.Spec
	// Forwards splice connections to a peer port to a real upstream,
	// dialed from the caller's own network namespace.
	Forwards []services.Forward
	// Transparent routes every address through the link: each TCP
	// connection the program makes is terminated by the peer and re-dialed
	// to its original destination from the caller's namespace.
	Transparent bool
	// Seed drives loss and jitter.
	Seed uint64
	// Observer sees every packet (a capture, a packet log).
	Observer fault.Observer
	// Stdin, Stdout and Stderr are the program's.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Sysctls are net.* sysctls set inside the private namespace before
	// the program starts, e.g. "net.ipv4.tcp_retries2": "5".
	Sysctls map[string]string
	// Signals are passed on to the program. After SIGTERM, SIGINT,
	// SIGHUP or SIGQUIT the program has Grace to exit before it is
	// killed; a second SIGTERM or SIGINT kills it at once.
	Signals <-chan os.Signal
	// Grace is how long a program may take to exit after a stop signal
	// (0: DefaultGrace).
	Grace time.Duration
	// Timeout stops the program (SIGTERM, then SIGKILL after Grace) when
	// it runs this long; 0 means no limit.
	Timeout time.Duration
	// Report collects the per-connection report (ExecResult.Report): the
	// packets of every connection, the kernel's view of its sockets and
	// their options, the endings and the theory.
	Report bool
	// SampleInterval is how often the kernel's view is sampled (0: 20 ms).
	SampleInterval time.Duration
	// Expect are the report's gates (--expect detect<30s, reconnected).
	Expect []ExecExpect
}

// DefaultGrace is how long a program may take to exit after a stop signal
// before Exec kills it.
const DefaultGrace = 10 * time.Second

// ExecResult is what Exec returns: the program's exit code (128+N if
// signal N killed it; 127 not found) and, with ExecOptions.Report, the
// report.
type ExecResult struct {
	Code   int
	Report *Report
}
