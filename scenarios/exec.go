package scenarios

import (
	"io"

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
}
