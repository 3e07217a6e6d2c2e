package vlink

import (
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/unplug-dev/unplug/internal/errno"
)

// Errno is a socket error by its Linux name ("ETIMEDOUT"): errno.Errno,
// the one table the virtual client and the scenario reports share. An Errno
// is an error, so errors.Is(err, ETIMEDOUT) works on everything Conn
// returns.
type Errno = errno.Errno

// The errors a TCP socket reports (errno's, under vlink's names).
const (
	EAGAIN        = errno.EAGAIN // would block: step the clock and retry
	ETIMEDOUT     = errno.ETIMEDOUT
	ECONNRESET    = errno.ECONNRESET
	ECONNREFUSED  = errno.ECONNREFUSED
	ECONNABORTED  = errno.ECONNABORTED
	EPIPE         = errno.EPIPE
	ENOTCONN      = errno.ENOTCONN
	EHOSTUNREACH  = errno.EHOSTUNREACH
	EHOSTDOWN     = errno.EHOSTDOWN
	ENETUNREACH   = errno.ENETUNREACH
	EADDRINUSE    = errno.EADDRINUSE
	EADDRNOTAVAIL = errno.EADDRNOTAVAIL
	EALREADY      = errno.EALREADY
	EISCONN       = errno.EISCONN
	EINPROGRESS   = errno.EINPROGRESS
	EINVAL        = errno.EINVAL
	EMSGSIZE      = errno.EMSGSIZE
	ENOBUFS       = errno.ENOBUFS
	EOPNOTSUPP    = errno.EOPNOTSUPP
	ENOPROTOOPT   = errno.ENOPROTOOPT
	EIO           = errno.EIO
)

// ErrWouldBlock is what non-blocking Conn and Listener operations return when
// they have to wait: let virtual time pass (Pair.Step) and try again.
var ErrWouldBlock error = EAGAIN

// OpError is a failed socket operation.
type OpError struct {
	Op    string      // "dial", "write", "read", "accept", "setsockopt", "connection"
	Errno Errno       // the name Linux would report
	Err   tcpip.Error // gVisor's error
}

// Error returns e.g. "write: ETIMEDOUT (connection timed out)".
func (e *OpError) Error() string { return fmt.Sprintf("%s: %s (%s)", e.Op, e.Errno, e.Err) }

// Unwrap returns the Errno, so errors.Is(err, ETIMEDOUT) holds.
func (e *OpError) Unwrap() error { return e.Errno }

// ErrnoOf returns the Errno in err's chain, or "" if there is none.
func ErrnoOf(err error) Errno { return errno.In(err) }

func opError(op string, err tcpip.Error) *OpError {
	return &OpError{Op: op, Errno: errno.Of(err), Err: err}
}
