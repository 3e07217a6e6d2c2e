// Package errno names the socket error an application would see for an
// error from gVisor's netstack: one table, keyed by the tcpip error's type,
// that the virtual client (internal/vlink) and the scenario reports
// (scenarios.ErrnoName) both read, so a connection that fails the same way
// is reported the same way in both.
//
// The table follows gVisor's own syscall layer (pkg/syserr/netstack.go),
// which is what a program on gVisor sees. Where that differs from what a
// reader might guess, the entry says why: tcpip.ErrAborted is EPIPE, not
// ECONNABORTED, because gVisor raises it for a RST received in CLOSE-WAIT,
// where Linux's tcp_reset also sets EPIPE, and for a local Abort;
// ECONNABORTED belongs to tcpip.ErrConnectionAborted (a connection that
// failed before accept). Names, not numbers: ETIMEDOUT is 110 on Linux and
// 60 on macOS.
package errno

import (
	"errors"
	"reflect"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// Errno is a socket error by its Linux name ("ETIMEDOUT"). An Errno is an
// error, so errors.Is(err, ETIMEDOUT) works on errors that wrap one.
type Errno string

// Error returns the name.
func (e Errno) Error() string { return string(e) }

// The errors a TCP socket reports.
const (
	EAGAIN        Errno = "EAGAIN" // would block
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

// table lists, per errno, the gVisor errors that mean it.
var table = []struct {
	errno Errno
	errs  []tcpip.Error
}{
	{EAGAIN, []tcpip.Error{&tcpip.ErrWouldBlock{}, &tcpip.ErrNoPortAvailable{}}},
	{ETIMEDOUT, []tcpip.Error{&tcpip.ErrTimeout{}}},
	{ECONNRESET, []tcpip.Error{&tcpip.ErrConnectionReset{}}},
	{ECONNREFUSED, []tcpip.Error{&tcpip.ErrConnectionRefused{}}},
	{ECONNABORTED, []tcpip.Error{&tcpip.ErrConnectionAborted{}}},
	// ErrAborted: RST in CLOSE-WAIT (Linux: EPIPE too) or a local Abort.
	{EPIPE, []tcpip.Error{&tcpip.ErrClosedForSend{}, &tcpip.ErrAborted{}}},
	{ENOTCONN, []tcpip.Error{&tcpip.ErrNotConnected{}}},
	{EHOSTUNREACH, []tcpip.Error{&tcpip.ErrHostUnreachable{}}},
	{EHOSTDOWN, []tcpip.Error{&tcpip.ErrHostDown{}}},
	{ENETUNREACH, []tcpip.Error{&tcpip.ErrNetworkUnreachable{}, &tcpip.ErrNoNet{}}},
	{EADDRINUSE, []tcpip.Error{&tcpip.ErrPortInUse{}}},
	{EADDRNOTAVAIL, []tcpip.Error{&tcpip.ErrBadLocalAddress{}}},
	{EALREADY, []tcpip.Error{&tcpip.ErrAlreadyConnecting{}}},
	{EISCONN, []tcpip.Error{&tcpip.ErrAlreadyConnected{}}},
	{EINPROGRESS, []tcpip.Error{&tcpip.ErrConnectStarted{}}},
	{EMSGSIZE, []tcpip.Error{&tcpip.ErrMessageTooLong{}}},
	{ENOBUFS, []tcpip.Error{&tcpip.ErrNoBufferSpace{}}},
	{EOPNOTSUPP, []tcpip.Error{&tcpip.ErrNotSupported{}}},
	{ENOPROTOOPT, []tcpip.Error{&tcpip.ErrUnknownProtocolOption{}}},
	{EINVAL, []tcpip.Error{&tcpip.ErrInvalidEndpointState{}, &tcpip.ErrInvalidOptionValue{}, &tcpip.ErrAlreadyBound{},
		&tcpip.ErrUnknownProtocol{}, &tcpip.ErrMalformedHeader{}, &tcpip.ErrInvalidPortRange{}}},
}

// byType and byMessage index table by the error's dynamic type and by its
// message (gonet flattens tcpip errors into errors.New(err.String())).
var byType, byMessage = func() (map[reflect.Type]Errno, map[string]Errno) {
	t, m := map[reflect.Type]Errno{}, map[string]Errno{}
	for _, row := range table {
		for _, e := range row.errs {
			t[reflect.TypeOf(e)] = row.errno
			m[e.String()] = row.errno
		}
	}
	return t, m
}()

// Lookup returns the errno for a gVisor error, and false for nil or an
// error the table does not know.
func Lookup(err tcpip.Error) (Errno, bool) {
	if err == nil {
		return "", false
	}
	e, ok := byType[reflect.TypeOf(err)]
	return e, ok
}

// Of returns the errno for a gVisor error: Lookup's, or EIO for an error
// the table does not know (as a socket reports an unexpected failure).
func Of(err tcpip.Error) Errno {
	if e, ok := Lookup(err); ok {
		return e
	}
	return EIO
}

// FromMessage returns the errno for the message of a gVisor error, for
// errors that gonet turned into plain strings.
func FromMessage(msg string) (Errno, bool) {
	e, ok := byMessage[msg]
	return e, ok
}

// In returns the Errno in err's chain, or "" if there is none.
func In(err error) Errno {
	var e Errno
	if errors.As(err, &e) {
		return e
	}
	return ""
}
