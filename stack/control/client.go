package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// maxResponseSize bounds how much of a response Call reads, so a confused
// peer cannot make the client buffer without limit.
const maxResponseSize = 16 << 20

// Errors a front end can add its own advice to (cmd/unplug names its
// --control flag and the serve command): every path problem of Listen and
// Call wraps ErrSocketPath (a path that is too long wraps ErrShorterPath,
// which wraps ErrSocketPath), and a Call with nobody listening wraps
// ErrNoServer.
var (
	ErrSocketPath        = errors.New("choose another control socket path")
	ErrShorterPath error = shorterPath{}
	ErrNoServer          = errors.New("start the server or choose the socket it listens on")
)

// shorterPath is ErrShorterPath: its own advice, and an ErrSocketPath.
type shorterPath struct{}

func (shorterPath) Error() string        { return "choose a shorter control socket path" }
func (shorterPath) Is(target error) bool { return target == ErrSocketPath }

// RemoteError is a failure reported by the server: the operation ran (or was
// refused) and the server's one-line message explains why. Callers can tell
// it apart from connection problems with errors.As.
type RemoteError struct {
	// Op is the requested operation.
	Op string
	// Message is the server's one-line error text.
	Message string
}

// Error returns the server's message unchanged: it is already written for
// the user.
func (e *RemoteError) Error() string { return e.Message }

// Call sends one request to the unplug serve listening on path and waits for
// its response. On success the response data is decoded into out (if out
// is not nil and the server sent data). A server-side failure is returned as
// a *RemoteError; connection problems become one-line errors saying what to
// do. Call has no timeout of its own: bound it with ctx.
func Call(ctx context.Context, path, op string, args []string, out any) error {
	req, err := json.Marshal(Request{V: ProtocolVersion, Op: op, Args: args})
	if err != nil {
		return fmt.Errorf("encode %s request: %w", op, err)
	}
	if len(req) > MaxRequestSize {
		return fmt.Errorf("%s request too large (%d bytes, the limit is %d); send fewer or shorter arguments", op, len(req), MaxRequestSize)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return dialError(ctx, path, err)
	}
	defer c.Close()
	// Cancelling ctx unblocks the write and read below.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	_, werr := c.Write(append(req, '\n'))
	// Read even if the write failed: the server may have answered (for
	// example "request too large") before closing.
	var resp Response
	rerr := json.NewDecoder(io.LimitReader(c, maxResponseSize)).Decode(&resp)
	switch {
	case rerr == nil:
	case ctx.Err() != nil:
		return fmt.Errorf("%s on %s: %w", op, path, context.Cause(ctx))
	case werr != nil:
		return fmt.Errorf("send %s request to %s: %w", op, path, errnoOf(werr))
	case errors.Is(rerr, io.EOF), errors.Is(rerr, io.ErrUnexpectedEOF), errors.Is(rerr, syscall.ECONNRESET):
		return fmt.Errorf("unplug serve on %s closed the connection without answering %s", path, op)
	default:
		return fmt.Errorf("read %s response from %s: %w", op, path, errnoOf(rerr))
	}
	if !resp.OK {
		msg := resp.Error
		if msg == "" {
			msg = "unplug serve reported a failure without a message"
		}
		return &RemoteError{Op: op, Message: oneLine(msg)}
	}
	if out != nil && len(resp.Data) > 0 {
		if err := json.Unmarshal(resp.Data, out); err != nil {
			return fmt.Errorf("decode %s response from %s: %w", op, path, err)
		}
	}
	return nil
}

// dialError turns a failed connect into a message that says what to do.
func dialError(ctx context.Context, path string, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("connect to control socket %s: %w", path, context.Cause(ctx))
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		// ECONNREFUSED: a stale socket left by a server that died.
		return fmt.Errorf("no unplug serve is listening on %s: %w", path, ErrNoServer)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		if fi, serr := os.Stat(path); serr == nil {
			if owner, ok := fileOwner(fi); ok {
				return fmt.Errorf("permission denied on control socket %s (it belongs to uid %d); run the command as uid %d or root", path, owner, owner)
			}
		}
		return fmt.Errorf("permission denied on control socket %s; run the command as the user running unplug serve, or root", path)
	}
	return fmt.Errorf("connect to control socket %s: %w", path, errnoOf(err))
}
