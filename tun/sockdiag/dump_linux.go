package sockdiag

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// recvBufLen is the receive buffer for dump replies. The kernel fills each
// reply datagram up to what the reader's buffer can take (at most 32 KiB
// per skb); a larger buffer means fewer recv calls.
const recvBufLen = 64 << 10

// Dumper lists the TCP sockets of the namespace a NETLINK_SOCK_DIAG socket
// belongs to, reusing its buffers from one dump to the next: a sampler
// polling every few milliseconds allocates almost nothing.
//
// The slice Dump returns is reused by the next Dump. Info pointers, from
// Dump or Append, stay valid until the second dump after the one that
// returned them (their storage is double-buffered); copy what you keep
// longer. A Dumper is safe for concurrent use; dumps are serialized.
type Dumper struct {
	nl *os.File

	mu      sync.Mutex
	rc      syscall.RawConn
	seq     uint32
	req     []byte
	buf     []byte
	parsers [2]parser // alternate between dumps: see the Info contract
	turn    int
	out     []Socket // result slice handed out by Dump, reused by Append
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
// inside the private namespace). For repeated dumps use a Dumper.
func Dump(nl *os.File) ([]Socket, error) {
	return NewDumper(nl).Append(nil)
}

// Dump lists every TCP socket (IPv4, then IPv6) of the namespace. The
// returned slice is the Dumper's own and is overwritten by the next Dump;
// use Append to collect into a slice of your own.
func (d *Dumper) Dump() ([]Socket, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out, err := d.dumpLocked(d.out[:0])
	d.out = out[:0]
	return out, err
}

// Append appends every TCP socket of the namespace to dst. Info pointers
// follow the same rule as for Dump.
func (d *Dumper) Append(dst []Socket) ([]Socket, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dumpLocked(dst)
}

// dumpLocked runs the IPv4 and the IPv6 dump.
func (d *Dumper) dumpLocked(dst []Socket) ([]Socket, error) {
	if d.rc == nil {
		rc, err := d.nl.SyscallConn()
		if err != nil {
			return dst, fmt.Errorf("sock_diag: %w", err)
		}
		d.rc = rc
		d.buf = make([]byte, recvBufLen)
	}
	p := &d.parsers[d.turn]
	d.turn ^= 1
	p.reset()
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
	var serr error
	err := d.rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), d.req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return serr != unix.EAGAIN
	})
	if err = errors.Join(err, serr); err != nil {
		return dst, fmt.Errorf("sock_diag: send dump request: %w", err)
	}
	for {
		var n int
		var rerr error
		err := d.rc.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), d.buf, unix.MSG_TRUNC)
			return rerr != unix.EAGAIN
		})
		if rerr == unix.EINTR {
			continue
		}
		if err = errors.Join(err, rerr); err != nil {
			return dst, fmt.Errorf("sock_diag: receive dump: %w", err)
		}
		if n > len(d.buf) {
			return dst, fmt.Errorf("sock_diag: dump reply of %d bytes does not fit the %d-byte buffer", n, len(d.buf))
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
