package unplug

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/unplug-dev/unplug/internal/errno"
	"github.com/unplug-dev/unplug/internal/vlink"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
)

// virtual is the Virtual clock: a vlink.Pair whose peer runs the services
// through a services.Poller, driven by whichever goroutine waits on it.
//
// One lock serializes everything that touches the pair. A goroutine that
// must wait (a Read with nothing to read, a Write into a full buffer, a
// Dial) runs one virtual instant with the lock held, then lets the others
// in, and repeats; when no timer is armed, nothing can change until
// another goroutine acts, so it waits for one to (gen counts their acts).
type virtual struct {
	mu     sync.Mutex
	acted  *sync.Cond
	gen    uint64
	closed bool
	pair   *vlink.Pair
	svc    *services.Poller
	drv    vlink.Driver
}

func newVirtual(opts Options, specs []fault.Spec) (world, error) {
	pair, err := vlink.NewPair(vlink.PairOptions{Delay: opts.Delay, Seed: opts.Seed, Faults: specs})
	if err != nil {
		return nil, err
	}
	cfg := services.DefaultConfig()
	cfg.Addrs = []tcpip.Address{services.DefaultAddrV4, services.DefaultAddrV6}
	svc, err := services.NewPoller(pair.Peer, vlink.NIC, cfg)
	if err != nil {
		pair.Close()
		return nil, err
	}
	v := &virtual{pair: pair, svc: svc, drv: vlink.Driver{Pair: pair, Poll: svc.Poll}}
	v.acted = sync.NewCond(&v.mu)
	return v, nil
}

// errClosed is what calls get after the test's cleanup stopped the peer.
var errClosed = errors.New("unplug: the peer is stopped (the test is over)")

// act runs f under the lock and wakes waiting goroutines: something may
// have changed for them.
func (v *virtual) act(f func()) {
	v.mu.Lock()
	defer v.mu.Unlock()
	f()
	v.gen++
	v.acted.Broadcast()
}

// block runs the pair until try reports done, the virtual deadline passes
// (os.ErrDeadlineExceeded; 0 = none; read again at every instant, so a
// deadline set while a call waits applies to it), ctx ends or the peer
// stops. try runs under the lock.
func (v *virtual) block(ctx context.Context, deadline func() time.Duration, try func() bool) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	for {
		if v.closed {
			return errClosed
		}
		limit := vlink.Forever
		if d := deadline(); d > 0 {
			limit = d
		}
		done, err := v.drv.Once(try, limit)
		v.gen++
		v.acted.Broadcast()
		switch {
		case done:
			return nil
		case errors.Is(err, vlink.ErrIdle):
			// Only another goroutine can change anything now.
			if err := v.waitForOthers(ctx); err != nil {
				return err
			}
			continue
		case err != nil:
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		// Let the other goroutines act at this instant before time moves.
		v.mu.Unlock()
		runtime.Gosched()
		v.mu.Lock()
	}
}

// waitForOthers waits, without the lock, until another goroutine acts, the
// peer stops or ctx ends.
func (v *virtual) waitForOthers(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { v.act(func() {}) })
	defer stop()
	for g := v.gen; v.gen == g && !v.closed && ctx.Err() == nil; {
		v.acted.Wait()
	}
	if v.closed {
		return errClosed
	}
	return ctx.Err()
}

func (v *virtual) dial(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	var c *vlink.Conn
	var err error
	var before int
	v.act(func() {
		if v.closed {
			err = errClosed
			return
		}
		before = v.svc.Accepted(ap.Port())
		c, err = v.pair.Dial(ap.Addr().String(), ap.Port())
	})
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ap), Err: sysErr(err)}
	}
	var deadline time.Duration
	if d, ok := ctx.Deadline(); ok {
		deadline = v.virtualDeadline(d)
	}
	// Like a kernel socket, Dial returns once the handshake is done; it
	// also waits for the peer's service to accept it, so a fault added
	// next cannot drop the handshake's last ACK.
	err = v.block(ctx, func() time.Duration { return deadline }, func() bool {
		return c.Err() != nil || (c.Established() && v.svc.Accepted(ap.Port()) > before)
	})
	if err == nil {
		err = c.Err()
	}
	if err != nil {
		v.act(c.Close)
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ap), Err: sysErr(err)}
	}
	return &virtualConn{v: v, c: c, local: c.LocalAddr(), remote: ap}, nil
}

// virtualDeadline converts a wall-clock deadline into virtual time: as far
// ahead of the virtual now as t is ahead of the wall clock's.
func (v *virtual) virtualDeadline(t time.Time) time.Duration {
	d := max(time.Until(t), 1)
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.pair.Now() + d
}

func (v *virtual) faults() *fault.Controller { return v.pair.Faults }

func (v *virtual) sleep(d time.Duration) {
	until := v.now() + d
	v.block(context.Background(), func() time.Duration { return until }, func() bool { return false })
}

func (v *virtual) now() time.Duration {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.pair.Now()
}

func (v *virtual) close() error {
	v.act(func() {
		if v.closed {
			return
		}
		v.closed = true
		v.svc.Close()
		v.pair.Close()
	})
	return nil
}

// sysErr adds the syscall.Errno of the socket error in err (ETIMEDOUT,
// ECONNRESET …), so errors.Is(err, syscall.ETIMEDOUT) holds for a virtual
// connection as for a kernel socket.
func sysErr(err error) error {
	if e, ok := sysErrnos[errno.In(err)]; ok {
		return fmt.Errorf("%w (%w, virtual)", e, err)
	}
	return err
}

// sysErrnos maps the socket errors a connection can end with to the
// platform's numbers.
var sysErrnos = map[errno.Errno]syscall.Errno{
	errno.ETIMEDOUT:    syscall.ETIMEDOUT,
	errno.ECONNRESET:   syscall.ECONNRESET,
	errno.ECONNREFUSED: syscall.ECONNREFUSED,
	errno.ECONNABORTED: syscall.ECONNABORTED,
	errno.EPIPE:        syscall.EPIPE,
	errno.ENOTCONN:     syscall.ENOTCONN,
	errno.EHOSTUNREACH: syscall.EHOSTUNREACH,
	errno.ENETUNREACH:  syscall.ENETUNREACH,
}

// virtualConn is a net.Conn on the virtual client: its calls block like a
// kernel socket's, letting virtual time pass while they wait.
type virtualConn struct {
	v             *virtual
	c             *vlink.Conn
	local, remote netip.AddrPort

	mu              sync.Mutex // guards the deadlines
	readDL, writeDL time.Duration
	closeOnce       sync.Once
}

func (vc *virtualConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: net.TCPAddrFromAddrPort(vc.local),
		Addr: net.TCPAddrFromAddrPort(vc.remote), Err: sysErr(err)}
}

func (vc *virtualConn) readDeadline() time.Duration {
	vc.mu.Lock()
	defer vc.mu.Unlock()
	return vc.readDL
}

func (vc *virtualConn) writeDeadline() time.Duration {
	vc.mu.Lock()
	defer vc.mu.Unlock()
	return vc.writeDL
}

// Read implements net.Conn: it waits for data, end of stream (io.EOF) or
// the connection's failure.
func (vc *virtualConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var n int
	var rerr error
	err := vc.v.block(context.Background(), vc.readDeadline, func() bool {
		n, rerr = vc.c.Read(b)
		return !errors.Is(rerr, vlink.ErrWouldBlock)
	})
	switch {
	case err != nil:
		return 0, vc.opError("read", err)
	case errors.Is(rerr, io.EOF):
		return n, io.EOF
	case rerr != nil:
		return n, vc.opError("read", rerr)
	}
	return n, nil
}

// Write implements net.Conn: it returns once all of b is in the send
// buffer, or with the count so far and the error that stopped it.
func (vc *virtualConn) Write(b []byte) (int, error) {
	written := 0
	var werr error
	err := vc.v.block(context.Background(), vc.writeDeadline, func() bool {
		for written < len(b) {
			n, err := vc.c.Write(b[written:])
			written += n
			if err != nil {
				if errors.Is(err, vlink.ErrWouldBlock) {
					return false
				}
				werr = err
				return true
			}
		}
		return true
	})
	switch {
	case err != nil:
		return written, vc.opError("write", err)
	case werr != nil:
		return written, vc.opError("write", werr)
	}
	return written, nil
}

// Close implements net.Conn: a graceful close (FIN), as close(2).
func (vc *virtualConn) Close() error {
	vc.closeOnce.Do(func() {
		vc.v.act(func() {
			if !vc.v.closed {
				vc.c.Close()
			}
		})
	})
	return nil
}

// CloseWrite shuts the sending side down (FIN), as shutdown(SHUT_WR); the
// connection can still read.
func (vc *virtualConn) CloseWrite() error {
	var err error
	vc.v.act(func() { err = vc.c.CloseWrite() })
	if err != nil {
		return vc.opError("shutdown", err)
	}
	return nil
}

// LocalAddr implements net.Conn.
func (vc *virtualConn) LocalAddr() net.Addr { return net.TCPAddrFromAddrPort(vc.local) }

// RemoteAddr implements net.Conn.
func (vc *virtualConn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(vc.remote) }

// SetDeadline implements net.Conn; see SetReadDeadline.
func (vc *virtualConn) SetDeadline(t time.Time) error {
	vc.SetReadDeadline(t)
	return vc.SetWriteDeadline(t)
}

// SetReadDeadline implements net.Conn in virtual time: a deadline d ahead
// of the wall clock passes after d of virtual time; the zero time removes
// it.
func (vc *virtualConn) SetReadDeadline(t time.Time) error {
	dl := vc.convert(t)
	vc.mu.Lock()
	vc.readDL = dl
	vc.mu.Unlock()
	vc.v.act(func() {}) // wake a Read waiting for others
	return nil
}

// SetWriteDeadline implements net.Conn; see SetReadDeadline.
func (vc *virtualConn) SetWriteDeadline(t time.Time) error {
	dl := vc.convert(t)
	vc.mu.Lock()
	vc.writeDL = dl
	vc.mu.Unlock()
	vc.v.act(func() {})
	return nil
}

func (vc *virtualConn) convert(t time.Time) time.Duration {
	if t.IsZero() {
		return 0
	}
	return vc.v.virtualDeadline(t)
}
