package scenarios

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/unplug-dev/unplug/internal/errno"
)

// NetstackError carries a gVisor tcpip.Error as a Go error, so that a
// client built on a gVisor stack (the virtual environment) reports the same
// errno names as a kernel socket. Wrap tcpip errors in it at the boundary.
type NetstackError struct{ Err tcpip.Error }

// Error implements error with gVisor's message.
func (e *NetstackError) Error() string { return e.Err.String() }

// ErrnoName returns the symbolic errno an application would see for err:
// "ETIMEDOUT", "EPIPE", "ECONNRESET"... Reports use names, never numbers,
// because numbers differ between operating systems (ETIMEDOUT is 110 on
// Linux and 60 on macOS). It understands syscall.Errno anywhere in the
// chain, errno.Errno (vlink's, the virtual client's), NetstackError, and
// gVisor errors flattened by gonet, all by package errno's one table. io.EOF is
// "EOF"; a passed deadline is "EAGAIN", as SO_RCVTIMEO reports it. Errors
// that are not socket errors give "".
func ErrnoName(err error) string {
	if err == nil {
		return ""
	}
	if errors.Is(err, io.EOF) {
		return "EOF"
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "EAGAIN"
	}
	var sysErr syscall.Errno
	if errors.As(err, &sysErr) {
		if name := unix.ErrnoName(sysErr); name != "" {
			return name
		}
		return fmt.Sprintf("errno %d", int(sysErr))
	}
	if e := errno.In(err); e != "" {
		return string(e)
	}
	var ne *NetstackError
	if errors.As(err, &ne) {
		e, _ := errno.Lookup(ne.Err)
		return string(e)
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		if name, ok := errno.FromMessage(e.Error()); ok {
			return string(name)
		}
	}
	return ""
}

// errnoNames is every errno name this OS knows, for validating --expect.
var errnoNames = func() map[string]bool {
	m := map[string]bool{}
	for i := 1; i < 256; i++ {
		if name := unix.ErrnoName(syscall.Errno(i)); name != "" {
			m[name] = true
		}
	}
	// Names the scenarios report on every OS, whatever this one calls them.
	for _, n := range []string{"ETIMEDOUT", "EPIPE", "ECONNRESET", "ECONNREFUSED", "ECONNABORTED", "EHOSTUNREACH", "ENETUNREACH"} {
		m[n] = true
	}
	return m
}()

// isErrnoName reports whether s (upper case) names an errno.
func isErrnoName(s string) bool { return errnoNames[strings.ToUpper(s)] }
