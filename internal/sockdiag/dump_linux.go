package sockdiag

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// replyTimeout bounds the wait for the kernel's reply, which comes at once
// unless another reader took it from the same socket.
const replyTimeout = 5 * time.Second

// recvBufLen is the receive buffer for dump replies. The kernel fills each
// reply datagram up to what the reader's buffer can take (at most 32 KiB
// per skb); a larger buffer means fewer recv calls.
const recvBufLen = 64 << 10

// Dumper lists the TCP sockets of the namespace a NETLINK_SOCK_DIAG socket
// belongs to, reusing its buffers from one dump to the next: a sampler
// polling every few milliseconds allocates almost nothing.
//
// Dump (and a Tracker's Dump) return the Dumper's own storage, slice and
// Info alike, which the next such call overwrites: that is what keeps a
// poll free of allocations. Append and Lookup return storage of the
// caller's own. A Dumper is safe for concurrent use (calls are
// serialized), but a Dumper shared between goroutines should be read with
// Append. It
// must be the only reader of its socket: replies taken by another reader
// are lost (the Dumper then fails after a few seconds).
type Dumper struct {
	nl *os.File

	mu     sync.Mutex
	rc     syscall.RawConn
	seq    uint32
	req    []byte
	buf    []byte
	parser parser   // tcp_info storage of Dump and Tracker results, reused
	out    []Socket // result slice handed out by Dump, reused by Append

	writeFn, readFn func(fd uintptr) bool // RawConn callbacks, see init
	n               int                   // readFn's result
	ioErr           error                 // writeFn's or readFn's errno

	tap func(datagram []byte) // tests: sees every reply datagram
}

// NewDumper returns a Dumper reading through nl, a NETLINK_SOCK_DIAG
// socket created in the namespace of interest, e.g. with
// tun.Namespace.Socket(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_SOCK_DIAG).
// The caller keeps ownership of nl and closes it after the last Dump.
func NewDumper(nl *os.File) *Dumper {
	return &Dumper{nl: nl}
}

// Dump lists every TCP socket (IPv4 and IPv6) visible to nl, a
// NETLINK_SOCK_DIAG socket created in the namespace of interest (the
// caller gets one with ns.Socket(unix.AF_NETLINK, unix.SOCK_RAW,
// unix.NETLINK_SOCK_DIAG) from tun.Namespace, whose agent creates sockets
// inside the private namespace). For repeated dumps use a Dumper, and do
// not call Dump on a socket a Dumper is using.
func Dump(nl *os.File) ([]Socket, error) {
	return NewDumper(nl).Append(nil)
}

// Dump lists every TCP socket (IPv4, then IPv6) of the namespace. The
// slice and the Info it points to are the Dumper's own and are
// overwritten by the next Dump (or Tracker.Dump); use Append to keep them.
func (d *Dumper) Dump() ([]Socket, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.parser.reset()
	out, err := d.dumpLocked(&d.parser, d.out[:0])
	d.out = out[:0]
	return out, err
}

// Append appends every TCP socket of the namespace to dst, with Info of
// the caller's own.
func (d *Dumper) Append(dst []Socket) ([]Socket, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dumpLocked(new(parser), dst)
}

// dumpLocked runs the IPv4 and the IPv6 dump, with p's Info storage.
func (d *Dumper) dumpLocked(p *parser, dst []Socket) ([]Socket, error) {
	if err := d.init(); err != nil {
		return dst, err
	}
	var err error
	for _, family := range [...]uint8{afInet, afInet6} {
		if dst, err = d.dumpFamily(p, family, dst); err != nil {
			return dst, err
		}
	}
	if p.intr {
		return dst, ErrDumpInterrupted
	}
	return dst, nil
}

// dumpFamily sends one dump request and reads its replies up to NLMSG_DONE.
func (d *Dumper) dumpFamily(p *parser, family uint8, dst []Socket) ([]Socket, error) {
	d.seq++
	seq := d.seq
	d.req = appendRequest(d.req[:0], family, seq)
	if err := d.send(); err != nil {
		return dst, err
	}
	for {
		n, err := d.recv()
		if err != nil {
			return dst, err
		}
		var done bool
		dst, done, err = p.parse(d.buf[:n], seq, dst)
		if err != nil || done {
			return dst, err
		}
		if n == 0 {
			return dst, errors.New("sock_diag: netlink socket closed during a dump")
		}
	}
}

// send sends d.req to the kernel (an unconnected netlink socket's default
// destination).
func (d *Dumper) send() error {
	d.ioErr = nil
	if err := d.rc.Write(d.writeFn); err != nil {
		return fmt.Errorf("sock_diag: send request: %w", err)
	}
	if d.ioErr != nil {
		return fmt.Errorf("sock_diag: send request: %w", d.ioErr)
	}
	return nil
}

// recv receives one reply datagram into d.buf.
func (d *Dumper) recv() (int, error) {
	d.nl.SetReadDeadline(time.Now().Add(replyTimeout))
	for {
		d.ioErr = nil
		err := d.rc.Read(d.readFn)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, fmt.Errorf("sock_diag: no reply within %v: is something else reading the same netlink socket? Use one Dumper per socket", replyTimeout)
		}
		if d.ioErr == unix.EINTR {
			continue
		}
		if err == nil {
			err = d.ioErr
		}
		if err != nil {
			return 0, fmt.Errorf("sock_diag: receive reply: %w", err)
		}
		n := d.n
		if n > len(d.buf) {
			return 0, fmt.Errorf("sock_diag: reply of %d bytes does not fit the %d-byte buffer", n, len(d.buf))
		}
		if d.tap != nil {
			d.tap(d.buf[:n])
		}
		return n, nil
	}
}

// init prepares the raw connection and buffers on first use.
func (d *Dumper) init() error {
	if d.rc != nil {
		return nil
	}
	rc, err := d.nl.SyscallConn()
	if err != nil {
		return fmt.Errorf("sock_diag: %w", err)
	}
	d.rc = rc
	d.buf = make([]byte, recvBufLen)
	// Built once: closures handed to RawConn escape, and a sampler calls
	// them for every socket on every poll.
	d.writeFn = func(fd uintptr) bool {
		_, d.ioErr = unix.Write(int(fd), d.req)
		return d.ioErr != unix.EAGAIN
	}
	d.readFn = func(fd uintptr) bool {
		// recvfrom(2) without an address (unix.Recvfrom allocates one);
		// MSG_TRUNC returns the real length of a datagram too big for buf.
		r, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&d.buf[0])), uintptr(len(d.buf)), unix.MSG_TRUNC, 0, 0)
		d.n, d.ioErr = int(r), nil
		if errno != 0 {
			d.n, d.ioErr = 0, errno
		}
		return d.ioErr != unix.EAGAIN
	}
	return nil
}

// Lookup asks the kernel for the one socket s names (a Socket from an
// earlier Dump or Lookup: its addresses and cookie), which costs a hash
// lookup instead of a walk over the whole socket table. found is false
// once the kernel no longer has that socket. Info is the caller's own.
func (d *Dumper) Lookup(s Socket) (_ Socket, found bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.init(); err != nil {
		return Socket{}, false, err
	}
	return d.lookupLocked(new(parser), &s)
}

// lookupLocked runs one lookup with parser p. A miss is asked again once:
// a socket entering TIME_WAIT is invisible to lookups for an instant
// (inet_twsk_hashdance links the TIME_WAIT entry with a reference count of
// 0 before it unlinks the full socket, and __inet_lookup_established gives
// up on an entry it cannot take a reference on).
func (d *Dumper) lookupLocked(p *parser, s *Socket) (Socket, bool, error) {
	got, found, err := d.lookupOnce(p, s)
	if err == nil && !found {
		got, found, err = d.lookupOnce(p, s)
	}
	return got, found, err
}

// lookupOnce sends one lookup request and reads its reply.
func (d *Dumper) lookupOnce(p *parser, s *Socket) (Socket, bool, error) {
	d.seq++
	seq := d.seq
	d.req = appendLookup(d.req[:0], s, seq)
	if err := d.send(); err != nil {
		return Socket{}, false, err
	}
	for {
		n, err := d.recv()
		if err != nil {
			return Socket{}, false, err
		}
		got, found, err := p.parseLookup(d.buf[:n], seq)
		if err != errNoReply {
			return got, found, err
		}
	}
}
