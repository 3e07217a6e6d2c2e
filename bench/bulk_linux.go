package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// bulkChunk is the size of each write of a bulk sender.
const bulkChunk = 128 << 10

// bulk sends to a fresh connection from dial for d (or, with d zero,
// limit bytes), half-closes, and waits for the receiver's end-of-file,
// which it sends once it has read everything: the result is bytes
// delivered per second.
func bulk(ctx context.Context, dial func(context.Context) (net.Conn, error), d time.Duration, limit int64) (float64, error) {
	c, err := dial(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	lastMSS.Store(int64(clientMSS(c)))
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, bulkChunk)
	var sent int64
	start := time.Now()
	end := start.Add(d)
	for (d > 0 && time.Now().Before(end)) || (d == 0 && sent < limit) {
		n, err := c.Write(buf)
		sent += int64(n)
		if err != nil {
			return 0, fmt.Errorf("bulk send: %w", ctxErr(ctx, err))
		}
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil {
			return 0, fmt.Errorf("bulk send: half-close: %w", err)
		}
	}
	if _, err := io.Copy(io.Discard, c); err != nil {
		return 0, fmt.Errorf("bulk send: wait for the receiver: %w", ctxErr(ctx, err))
	}
	return float64(sent) / time.Since(start).Seconds(), nil
}

// transfer moves data through a fresh connection from dial for d and
// returns bytes per second.
type transfer func(ctx context.Context, dial func(context.Context) (net.Conn, error), d time.Duration) (float64, error)

// upload is bulk for d: the client sends.
func upload(ctx context.Context, dial func(context.Context) (net.Conn, error), d time.Duration) (float64, error) {
	return bulk(ctx, dial, d, 0)
}

// download reads from a fresh connection to a source for d: the client
// receives.
func download(ctx context.Context, dial func(context.Context) (net.Conn, error), d time.Duration) (float64, error) {
	c, err := dial(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, bulkChunk)
	var got int64
	start := time.Now()
	for end := start.Add(d); time.Now().Before(end); {
		n, err := c.Read(buf)
		got += int64(n)
		if err != nil {
			return 0, fmt.Errorf("bulk receive: %w", ctxErr(ctx, err))
		}
	}
	return float64(got) / time.Since(start).Seconds(), nil
}

// serveSource accepts on l until it is closed and writes to each
// connection until the client goes away, as the peer's source service
// does.
func serveSource(l net.Listener) {
	buf := make([]byte, bulkChunk)
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			for {
				if _, err := c.Write(buf); err != nil {
					break
				}
			}
			c.Close()
		}()
	}
}

// lastMSS is the MSS the kernel client used in the latest bulk transfer.
var lastMSS atomic.Int64

// clientMSS reads the kernel's current MSS (TCP_MAXSEG) of c; 0 if unknown.
func clientMSS(c net.Conn) int {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	mss := 0
	rc.Control(func(fd uintptr) { mss, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG) })
	return mss
}

// ctxErr prefers the context's error to the deadline error it caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// serveDiscard accepts on l until it is closed, reading each connection to
// its end the way the peer's discard service does (io.Copy into
// io.Discard), then closing it.
func serveDiscard(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			io.Copy(io.Discard, c)
			c.Close()
		}()
	}
}

// serveEcho is the baseline's echo service: io.Copy back, as the peer's.
func serveEcho(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			io.Copy(c, c)
			c.Close()
		}()
	}
}

// errSkipped marks a row that could not run on this machine.
var errSkipped = errors.New("skipped")
