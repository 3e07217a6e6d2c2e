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

	"github.com/unplug-dev/unplug/stack/vlink"
)

// NetstackError carries a gVisor tcpip.Error as a Go error, so that a
// client built on a gVisor stack (the virtual environment) reports the same
// errno names as a kernel socket. Wrap tcpip errors in it at the boundary.
type NetstackError struct{ Err tcpip.Error }

// Error implements error with gVisor's message.
func (e *NetstackError) Error() string { return e.Err.String() }

// tcpipErrno maps gVisor's errors to the Linux errno a socket would return.
// gonet flattens tcpip errors into errors.New(err.String()), so the table is
// keyed by the message as well as used for type switches.
var tcpipErrno = func() map[string]string {
	m := map[string]string{}
	for errno, errs := range map[string][]tcpip.Error{
		"ETIMEDOUT":    {&tcpip.ErrTimeout{}},
		"ECONNRESET":   {&tcpip.ErrConnectionReset{}},
		"ECONNREFUSED": {&tcpip.ErrConnectionRefused{}},
		"ECONNABORTED": {&tcpip.ErrConnectionAborted{}, &tcpip.ErrAborted{}},
		"EPIPE":        {&tcpip.ErrClosedForSend{}},
		"EAGAIN":       {&tcpip.ErrWouldBlock{}},
		"ENOTCONN":     {&tcpip.ErrNotConnected{}},
		"ENETUNREACH":  {&tcpip.ErrNetworkUnreachable{}},
		"EHOSTUNREACH": {&tcpip.ErrHostUnreachable{}},
		"EHOSTDOWN":    {&tcpip.ErrHostDown{}},
		"ENOBUFS":      {&tcpip.ErrNoBufferSpace{}},
		"EADDRINUSE":   {&tcpip.ErrPortInUse{}},
		"EINPROGRESS":  {&tcpip.ErrConnectStarted{}},
		"EALREADY":     {&tcpip.ErrAlreadyConnecting{}},
		"EISCONN":      {&tcpip.ErrAlreadyConnected{}},
		"EMSGSIZE":     {&tcpip.ErrMessageTooLong{}},
	} {
		for _, e := range errs {
			m[e.String()] = errno
		}
	}
	return m
}()

// ErrnoName returns the symbolic errno an application would see for err:
// "ETIMEDOUT", "EPIPE", "ECONNRESET"... Reports use names, never numbers,
// because numbers differ between operating systems (ETIMEDOUT is 110 on
// Linux and 60 on macOS). It understands syscall.Errno anywhere in the
// chain, vlink.Errno (the virtual client), NetstackError, and gVisor errors
// flattened by gonet. io.EOF is
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
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if name := unix.ErrnoName(errno); name != "" {
			return name
		}
		return fmt.Sprintf("errno %d", int(errno))
	}
	var ve vlink.Errno
	if errors.As(err, &ve) {
		return string(ve)
	}
	var ne *NetstackError
	if errors.As(err, &ne) {
		if name, ok := tcpipErrno[ne.Err.String()]; ok {
			return name
		}
		return ""
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		if name, ok := tcpipErrno[e.Error()]; ok {
			return name
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
