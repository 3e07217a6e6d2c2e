//go:build !linux

package sockdiag

import (
	"fmt"
	"os"
	"runtime"
	"time"
)

// errNeedLinux is what everything returns off Linux.
func errNeedLinux(op string) error {
	return fmt.Errorf("%s: socket diagnostics need Linux (this is %s)", op, runtime.GOOS)
}

// Dumper lists a namespace's TCP sockets; it needs Linux.
type Dumper struct{}

// NewDumper returns a Dumper whose dumps fail: sock_diag needs Linux.
func NewDumper(nl *os.File) *Dumper { return &Dumper{} }

// Dump fails: sock_diag needs Linux.
func Dump(nl *os.File) ([]Socket, error) { return nil, errNeedLinux("sock_diag") }

// Dump fails: sock_diag needs Linux.
func (d *Dumper) Dump() ([]Socket, error) { return nil, errNeedLinux("sock_diag") }

// Append fails: sock_diag needs Linux.
func (d *Dumper) Append(dst []Socket) ([]Socket, error) { return dst, errNeedLinux("sock_diag") }

// NetnsInode fails: network namespaces need Linux.
func NetnsInode(pid int) (uint64, error) { return 0, errNeedLinux("network namespace") }

// FindSockets fails: it reads Linux's /proc.
func FindSockets(netnsIno uint64) ([]ProcSocket, error) { return nil, errNeedLinux("find sockets") }

// ReadOptions fails: pidfd_getfd needs Linux.
func ReadOptions(pid, fd int) (Options, error) { return Options{}, errNeedLinux("read socket options") }

// Lookup fails: sock_diag needs Linux.
func (d *Dumper) Lookup(s Socket) (Socket, bool, error) {
	return Socket{}, false, errNeedLinux("sock_diag")
}

// Tracker is a cheaper dump function for a Sampler; it needs Linux.
type Tracker struct {
	// FullEvery is the interval between full dumps.
	FullEvery time.Duration
}

// NewTracker returns a Tracker whose dumps fail: sock_diag needs Linux.
func NewTracker(d *Dumper) *Tracker { return &Tracker{} }

// Rescan does nothing off Linux.
func (t *Tracker) Rescan() {}

// Dump fails: sock_diag needs Linux.
func (t *Tracker) Dump() ([]Socket, error) { return nil, errNeedLinux("sock_diag") }
