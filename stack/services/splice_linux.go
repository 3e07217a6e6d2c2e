package services

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"github.com/unplug-dev/unplug/internal/busypoll"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/waiter"
)

// copyForward copies src to dst for a forward: from a client's
// connection to a kernel TCP socket straight out of gVisor's receive
// buffers (copyToSocket), from a kernel TCP socket with raw reads
// (rawReader), anything else through copyAdaptive.
func copyForward(dst io.Writer, src io.Reader) (int64, error) {
	if c, ok := src.(*conn); ok && c.pacer == nil {
		if tc, ok := dst.(*net.TCPConn); ok {
			if rc, err := tc.SyscallConn(); err == nil {
				return copyToSocket(tc, rc, c)
			}
		}
	}
	if tc, ok := src.(*net.TCPConn); ok {
		if rc, err := tc.SyscallConn(); err == nil {
			return copyAdaptive(dst, &rawReader{rc: rc})
		}
	}
	return copyAdaptive(dst, src)
}

// rawReader reads a kernel socket with read(2) as a raw system call on
// Go's poller, as copyToSocket writes one. A non-blocking read never
// sleeps, while an ordinary system call wakes sysmon out of its idle
// sleep on every request of an otherwise idle forward, and sysmon then
// polls every 20 µs until the P idles again: on one CPU that was 5 µs of
// every 25–30 µs round trip (docs/performance.md).
type rawReader struct{ rc syscall.RawConn }

// Read reads like the socket's own Read: io.EOF at the peer's FIN, the
// errno of a failed read in a *net.OpError, the deadline's error.
func (r *rawReader) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	if err := r.rc.Read(func(fd uintptr) bool {
		for {
			m, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
			switch e {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false
			}
			n, errno = int(m), e
			return true
		}
	}); err != nil {
		return 0, err
	}
	switch {
	case errno != 0:
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", errno)}
	case n == 0:
		return 0, io.EOF
	}
	busypoll.Touch(n)
	return n, nil
}

// Limits of one pass of copyToSocket: bytes and iovecs (IOV_MAX) per writev.
const (
	toSocketBytes = spliceLarge
	toSocketIovs  = 1024
)

// errStop ends an ep.Read early; never returned to a caller.
var errStop = errors.New("stop")

// errQueueChanged is copyToSocket's safety net (see there).
var errQueueChanged = errors.New("forward: gVisor's receive queue changed under its only reader")

// copyToSocket copies what the client sends on c to the kernel socket up
// without copying it in user space. Each pass reads gVisor's receive queue
// three times without copying: a peek counts what is queued (up to 256
// KiB), a second peek collects the queue's own memory and, from inside
// that read (while the endpoint's lock keeps gVisor from freeing it:
// Close and Abort take it), writes it with one non-blocking writev; a read
// then consumes what the socket took, nothing more. When the socket takes
// nothing the pass waits until it is writable. It returns at the client's
// FIN (nil error) or the first error, like io.Copy.
func copyToSocket(up *net.TCPConn, rc syscall.RawConn, c *conn) (int64, error) {
	p := &toSocket{rc: rc}
	var written int64
	var entry waiter.Entry
	var notify chan struct{}
	defer func() {
		if notify != nil {
			c.wq.EventUnregister(&entry)
		}
	}()
	fail := func(terr tcpip.Error) (int64, error) {
		if _, ok := terr.(*tcpip.ErrClosedForReceive); ok {
			return written, nil
		}
		return written, errors.New(terr.String())
	}
	for {
		// How much is queued, in whole views.
		p.peeked, p.views = 0, 0
		_, terr := c.ep.Read(peekCounter{p}, tcpip.ReadOptions{Peek: true})
		if _, ok := terr.(*tcpip.ErrWouldBlock); ok || (terr == nil && p.peeked == 0) {
			if notify == nil {
				entry, notify = waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr)
				c.wq.EventRegister(&entry)
				continue // data may have come before the registration
			}
			<-notify
			continue
		}
		if terr != nil {
			return fail(terr)
		}
		// Write it from inside a second peek.
		p.iovs, p.collected, p.sent, p.again, p.werr = p.iovs[:0], 0, 0, false, nil
		_, terr = c.ep.Read(p, tcpip.ReadOptions{Peek: true})
		clear(p.iovs)
		if p.werr != nil {
			return written, p.werr
		}
		if terr != nil && p.collected == 0 {
			return fail(terr)
		}
		if p.sent > 0 {
			// Consume what the socket took.
			d := &discardN{n: p.sent}
			if _, terr := c.ep.Read(d, tcpip.ReadOptions{}); terr != nil || d.n != 0 {
				return written, errQueueChanged
			}
			written += int64(p.sent)
			c.in.Add(uint64(p.sent))
			c.svc.bytesIn.Add(uint64(p.sent))
		}
		if p.again {
			if err := waitWritable(rc); err != nil {
				return written, err
			}
		}
	}
}

// waitWritable blocks until the socket behind rc may take more.
func waitWritable(rc syscall.RawConn) error {
	waited := false
	return rc.Write(func(uintptr) bool {
		if waited {
			return true
		}
		waited = true
		return false
	})
}

// toSocket is the state of one copyToSocket pass.
type toSocket struct {
	rc            syscall.RawConn
	peeked, views int      // what the first peek saw
	iovs          [][]byte // the queue's memory, valid only inside the read
	collected     int
	sent          int  // bytes the writev took
	again         bool // the socket took less than offered
	werr          error
	vecs          []unix.Iovec
}

// rawWritev is writev(2) as a raw system call: a non-blocking write to a
// socket never sleeps, so the Go runtime need not treat it as a system
// call that might (which hands the P over to another thread, and keeps
// sysmon polling every 20 µs to do so).
func rawWritev(fd int, iovs [][]byte, vecs *[]unix.Iovec) (int, error) {
	v := (*vecs)[:0]
	for _, b := range iovs {
		if len(b) == 0 {
			continue
		}
		iov := unix.Iovec{Base: &b[0]}
		iov.SetLen(len(b))
		v = append(v, iov)
	}
	*vecs = v
	if len(v) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&v[0])), uintptr(len(v)))
	clear(v)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// peekCounter counts the bytes queued in whole views, up to the limits.
type peekCounter struct{ p *toSocket }

func (w peekCounter) Write(b []byte) (int, error) {
	p := w.p
	if p.views > 0 && (p.peeked+len(b) > toSocketBytes || p.views == toSocketIovs) {
		return 0, errStop
	}
	p.peeked += len(b)
	p.views++
	return len(b), nil
}

// Write collects b (the receive queue's memory) until the peeked bytes are
// in hand, then writes them and stops the read.
func (p *toSocket) Write(b []byte) (int, error) {
	if p.collected >= p.peeked {
		return 0, errStop
	}
	b = b[:min(len(b), p.peeked-p.collected)]
	p.iovs = append(p.iovs, b)
	p.collected += len(b)
	if p.collected < p.peeked {
		return len(b), nil
	}
	p.flush()
	return len(b), errStop
}

// flush writes the collected iovecs with non-blocking writevs, until the
// socket takes no more.
func (p *toSocket) flush() {
	iovs := p.iovs
	for len(iovs) > 0 {
		var n int
		var err error
		if cerr := p.rc.Write(func(fd uintptr) bool {
			for {
				n, err = rawWritev(int(fd), iovs, &p.vecs)
				if err != unix.EINTR {
					return true
				}
			}
		}); cerr != nil {
			err = cerr
		}
		if n > 0 {
			p.sent += n
			iovs = consume(iovs, n)
		}
		switch {
		case err == unix.EAGAIN || (err == nil && n == 0):
			p.again = true
			return
		case err != nil:
			p.werr = err
			return
		}
	}
}

// discardN takes the first n bytes it is given and stops the read there.
type discardN struct{ n int }

func (d *discardN) Write(b []byte) (int, error) {
	if len(b) < d.n {
		d.n -= len(b)
		return len(b), nil
	}
	k := d.n
	d.n = 0
	return k, errStop
}

// consume drops the first n bytes of iovs.
func consume(iovs [][]byte, n int) [][]byte {
	for n > 0 && len(iovs) > 0 {
		if n < len(iovs[0]) {
			iovs[0] = iovs[0][n:]
			return iovs
		}
		n -= len(iovs[0])
		iovs = iovs[1:]
	}
	return iovs
}
