package vlink

import (
	"errors"
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// Errno is a socket error by its Linux name ("ETIMEDOUT"). Names, not
// numbers, because numbers differ between operating systems. An Errno is an
// error, so errors.Is(err, ETIMEDOUT) works on everything Conn returns.
type Errno string

// Error returns the name.
func (e Errno) Error() string { return string(e) }

// The errors a TCP socket reports.
const (
	EAGAIN        Errno = "EAGAIN" // would block: step the clock and retry
	ETIMEDOUT     Errno = "ETIMEDOUT"
	ECONNRESET    Errno = "ECONNRESET"
	ECONNREFUSED  Errno = "ECONNREFUSED"
	ECONNABORTED  Errno = "ECONNABORTED"
	EPIPE         Errno = "EPIPE"
	ENOTCONN      Errno = "ENOTCONN"
	EHOSTUNREACH  Errno = "EHOSTUNREACH"
	EHOSTDOWN     Errno = "EHOSTDOWN"
	ENETUNREACH   Errno = "ENETUNREACH"
	EADDRINUSE    Errno = "EADDRINUSE"
	EADDRNOTAVAIL Errno = "EADDRNOTAVAIL"
	EALREADY      Errno = "EALREADY"
	EISCONN       Errno = "EISCONN"
	EINPROGRESS   Errno = "EINPROGRESS"
	EINVAL        Errno = "EINVAL"
	EMSGSIZE      Errno = "EMSGSIZE"
	ENOBUFS       Errno = "ENOBUFS"
	EOPNOTSUPP    Errno = "EOPNOTSUPP"
	ENOPROTOOPT   Errno = "ENOPROTOOPT"
	EIO           Errno = "EIO"
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
func ErrnoOf(err error) Errno {
	var e Errno
	if errors.As(err, &e) {
		return e
	}
	return ""
}

func opError(op string, err tcpip.Error) *OpError {
	return &OpError{Op: op, Errno: errnoOf(err), Err: err}
}

// errnoOf maps gVisor's errors to errno names as gVisor's own syscall layer
// (pkg/syserr/netstack.go) does.
func errnoOf(err tcpip.Error) Errno {
	switch err.(type) {
	case *tcpip.ErrWouldBlock, *tcpip.ErrNoPortAvailable:
		return EAGAIN
	case *tcpip.ErrTimeout:
		return ETIMEDOUT
	case *tcpip.ErrConnectionReset:
		return ECONNRESET
	case *tcpip.ErrConnectionRefused:
		return ECONNREFUSED
	case *tcpip.ErrConnectionAborted:
		return ECONNABORTED
	case *tcpip.ErrClosedForSend, *tcpip.ErrAborted:
		return EPIPE
	case *tcpip.ErrNotConnected:
		return ENOTCONN
	case *tcpip.ErrHostUnreachable:
		return EHOSTUNREACH
	case *tcpip.ErrHostDown:
		return EHOSTDOWN
	case *tcpip.ErrNetworkUnreachable, *tcpip.ErrNoNet:
		return ENETUNREACH
	case *tcpip.ErrPortInUse:
		return EADDRINUSE
	case *tcpip.ErrBadLocalAddress:
		return EADDRNOTAVAIL
	case *tcpip.ErrAlreadyConnecting:
		return EALREADY
	case *tcpip.ErrAlreadyConnected:
		return EISCONN
	case *tcpip.ErrConnectStarted:
		return EINPROGRESS
	case *tcpip.ErrMessageTooLong:
		return EMSGSIZE
	case *tcpip.ErrNoBufferSpace:
		return ENOBUFS
	case *tcpip.ErrNotSupported:
		return EOPNOTSUPP
	case *tcpip.ErrUnknownProtocolOption:
		return ENOPROTOOPT
	case *tcpip.ErrInvalidEndpointState, *tcpip.ErrInvalidOptionValue, *tcpip.ErrAlreadyBound,
		*tcpip.ErrUnknownProtocol, *tcpip.ErrMalformedHeader, *tcpip.ErrInvalidPortRange:
		return EINVAL
	}
	return EIO
}
