//go:build !linux

package tun

import (
	"io"
	"syscall"
)

// Program is a program started inside a namespace; on this OS none can be.
type Program struct {
	// PID is the program's process id.
	PID int
}

// Start starts a program inside the namespace; unsupported on this OS.
func (ns *Namespace) Start(stdin io.Reader, stdout, stderr io.Writer, argv []string) (*Program, error) {
	return nil, errNeedLinux("namespace run")
}

// StartCode returns the exit code for a program that could not be started:
// -1 on this OS.
func StartCode(err error) int { return -1 }

// Done is closed once the program has exited; on this OS, at once.
func (p *Program) Done() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// Wait returns the program's exit code; unsupported on this OS.
func (p *Program) Wait() (int, error) { return -1, errNeedLinux("namespace run") }

// Signal sends a signal to the program; unsupported on this OS.
func (p *Program) Signal(sig syscall.Signal) error { return errNeedLinux("namespace run") }

// Kill kills the program; nothing to do on this OS.
func (p *Program) Kill() {}
