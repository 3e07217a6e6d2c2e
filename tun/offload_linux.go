package tun

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TUN offload flags (linux/if_tun.h): checksum offload, which TSO needs,
// and TCP segmentation offload for IPv4 and IPv6.
const tunOffloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6

// maxIovecs bounds one writev: the virtio-net header, the merged headers
// and one payload per segment of a 64 KiB super-packet of small segments.
const maxIovecs = 64

// offloadDevice is a TUN opened with IFF_VNET_HDR and TSO: every read and
// write carries a virtio-net header, reads may return TCP super-packets,
// and runs of segments are written as one. Like fileDevice it is
// non-blocking and driven by Go's poller.
type offloadDevice struct {
	f    *os.File
	rc   syscall.RawConn
	name string
	mtu  int

	// Read side, used by one reader at a time.
	rmu     sync.Mutex
	rvnet   [vnetHdrLen]byte
	rbuf    []byte   // super-packet being handed out by Read
	rsegs   [][]byte // its remaining segments, cut from rseg
	rseg    []byte   // segment storage
	riov    [2]unix.Iovec
	rn      int
	rerr    error
	readFn  func(fd uintptr) bool
	scratch [maxHeaderLen]byte

	// Write side.
	wmu     sync.Mutex
	wvnet   [vnetHdrLen]byte
	whdr    [maxHeaderLen]byte
	wiov    [maxIovecs]unix.Iovec
	wcnt    int
	werr    error
	writeFn func(fd uintptr) bool

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var _ Offload = (*offloadDevice)(nil)

// newOffloadDevice wraps f, a non-blocking, close-on-exec TUN descriptor
// with IFF_VNET_HDR whose offloads are set.
func newOffloadDevice(f *os.File, name string, mtu int) (*offloadDevice, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("offload tun %s: %w", name, err)
	}
	d := &offloadDevice{f: f, rc: rc, name: name, mtu: mtu}
	d.readFn = d.readv
	d.writeFn = d.writev
	return d, nil
}

// openOffload creates the TUN called name (the kernel picks one for "")
// with IFF_VNET_HDR and enables its offloads. The descriptor is
// non-blocking and close-on-exec; the returned name is the kernel's.
func openOffload(name string) (*os.File, string, error) {
	fd, err := openTunNode()
	if err != nil {
		return nil, "", err
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("create tun %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, "", err
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunOffloads); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EINVAL) {
			return nil, "", fmt.Errorf("enable TUN offloads (TUNSETOFFLOAD): %w: %w", errNoOffload, err)
		}
		return nil, "", fmt.Errorf("enable TUN offloads (TUNSETOFFLOAD): %w", err)
	}
	return os.NewFile(uintptr(fd), tunPath), ifr.Name(), nil
}

// errNoOffload marks a kernel that refuses TSO on a TUN; Create then falls
// back to the plain device.
var errNoOffload = errors.New("TUN offloads not supported")

// readv runs on the poller: one readv of the virtio-net header and the
// packet; false asks the poller to wait for readability.
func (d *offloadDevice) readv(fd uintptr) bool {
	n, _, errno := unix.Syscall(unix.SYS_READV, fd, uintptr(unsafe.Pointer(&d.riov[0])), 2)
	if errno == unix.EAGAIN {
		return false
	}
	d.rn, d.rerr = int(n), nil
	if errno != 0 {
		d.rn, d.rerr = 0, errno
	}
	return true
}

// ReadOffload implements Offload.ReadOffload.
func (d *offloadDevice) ReadOffload(p []byte) (int, GSO, error) {
	d.rmu.Lock()
	defer d.rmu.Unlock()
	return d.readOffloadLocked(p)
}

func (d *offloadDevice) readOffloadLocked(p []byte) (int, GSO, error) {
	if len(p) == 0 {
		return 0, GSO{}, fmt.Errorf("read %s: empty buffer", d.name)
	}
	d.riov[0].Base = &d.rvnet[0]
	d.riov[0].SetLen(vnetHdrLen)
	d.riov[1].Base = &p[0]
	d.riov[1].SetLen(len(p))
	for {
		if err := d.rc.Read(d.readFn); err != nil {
			return 0, GSO{}, d.ioError("read", err)
		}
		if d.rerr == unix.EINTR {
			continue
		}
		if d.rerr != nil {
			return 0, GSO{}, d.ioError("read", d.rerr)
		}
		break
	}
	d.riov[1].Base = nil
	n := d.rn - vnetHdrLen
	if n < 0 {
		return 0, GSO{}, fmt.Errorf("read %s: %w: %d bytes", d.name, errBadGSO, d.rn)
	}
	return n, parseVnetHdr(d.rvnet[:]), nil
}

// Read implements Device.Read: super-packets are split and handed out one
// segment per call, every checksum complete.
func (d *offloadDevice) Read(p []byte) (int, error) {
	d.rmu.Lock()
	defer d.rmu.Unlock()
	for len(d.rsegs) == 0 {
		if d.rbuf == nil {
			d.rbuf = make([]byte, MaxOffloadSize)
		}
		n, gso, err := d.readOffloadLocked(d.rbuf)
		if err != nil {
			return 0, err
		}
		pkt := d.rbuf[:n]
		if gso.Type == GSONone {
			if err := CompleteChecksum(pkt, gso); err != nil {
				continue // the kernel never sends these; skip, as a NIC would
			}
			if len(pkt) > len(p) {
				return copy(p, pkt), fmt.Errorf("read %s: packet of %d bytes: %w", d.name, len(pkt), io.ErrShortBuffer)
			}
			return copy(p, pkt), nil
		}
		d.rseg = d.rseg[:0]
		d.rsegs = d.rsegs[:0]
		err = SplitTCP(pkt, gso, d.scratch[:], true, func(s TCPSegment) error {
			start := len(d.rseg)
			d.rseg = s.Segment(d.rseg, pkt)
			d.rsegs = append(d.rsegs, d.rseg[start:])
			return nil
		})
		if err != nil {
			d.rsegs = d.rsegs[:0]
		}
	}
	seg := d.rsegs[0]
	d.rsegs = d.rsegs[1:]
	if len(seg) > len(p) {
		return copy(p, seg), fmt.Errorf("read %s: packet of %d bytes: %w", d.name, len(seg), io.ErrShortBuffer)
	}
	return copy(p, seg), nil
}

// writev runs on the poller: one writev of the prepared iovecs.
func (d *offloadDevice) writev(fd uintptr) bool {
	_, _, errno := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&d.wiov[0])), uintptr(d.wcnt))
	if errno == unix.EAGAIN {
		return false
	}
	d.werr = nil
	if errno != 0 {
		d.werr = errno
	}
	return true
}

// writeLocked writes the iovecs prepared in wiov[:wcnt].
func (d *offloadDevice) writeLocked() error {
	for {
		if err := d.rc.Write(d.writeFn); err != nil {
			return d.ioError("write", err)
		}
		if d.werr != unix.EINTR {
			break
		}
	}
	for i := range d.wcnt {
		d.wiov[i].Base = nil
	}
	if d.werr != nil {
		return d.ioError("write", d.werr)
	}
	return nil
}

// Write implements Device.Write: one packet behind an empty virtio-net
// header, so the kernel checks its checksums as usual.
func (d *offloadDevice) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if err := d.writeOneLocked(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (d *offloadDevice) writeOneLocked(p []byte) error {
	clear(d.wvnet[:])
	d.wiov[0].Base = &d.wvnet[0]
	d.wiov[0].SetLen(vnetHdrLen)
	d.wiov[1].Base = &p[0]
	d.wiov[1].SetLen(len(p))
	d.wcnt = 2
	return d.writeLocked()
}

// WriteBatch implements Offload.WriteBatch.
func (d *offloadDevice) WriteBatch(pkts [][]byte) (int, error) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	writes := 0
	for len(pkts) > 0 {
		n := coalescable(pkts[:min(len(pkts), maxIovecs-2)])
		var err error
		switch {
		case n > 1:
			err = d.writeMergedLocked(pkts[:n])
		case len(pkts[0]) > 0:
			err = d.writeOneLocked(pkts[0])
		default:
			pkts = pkts[1:]
			continue
		}
		writes++
		if errors.Is(err, ErrClosed) {
			return writes, err
		}
		pkts = pkts[n:]
	}
	return writes, nil
}

// writeMergedLocked writes a coalescable run as one super-packet.
func (d *offloadDevice) writeMergedLocked(run [][]byte) error {
	hdr, g := mergeHeader(d.whdr[:], run)
	putVnetHdr(d.wvnet[:], g, len(hdr))
	d.wiov[0].Base = &d.wvnet[0]
	d.wiov[0].SetLen(vnetHdrLen)
	d.wiov[1].Base = &hdr[0]
	d.wiov[1].SetLen(len(hdr))
	d.wcnt = 2
	for _, p := range run {
		payload := p[len(hdr):]
		d.wiov[d.wcnt].Base = &payload[0]
		d.wiov[d.wcnt].SetLen(len(payload))
		d.wcnt++
	}
	return d.writeLocked()
}

// ioError maps a closed descriptor to ErrClosed, as the Device contract
// promises.
func (d *offloadDevice) ioError(op string, err error) error {
	// RawConn reports a closed file with an error os cannot name.
	if errors.Is(err, os.ErrClosed) || d.closed.Load() {
		return fmt.Errorf("%s %s: %w", op, d.name, ErrClosed)
	}
	return fmt.Errorf("%s %s: %w", op, d.name, err)
}

// Name implements Device.Name.
func (d *offloadDevice) Name() string { return d.name }

// MTU implements Device.MTU.
func (d *offloadDevice) MTU() int { return d.mtu }

// Close implements Device.Close.
func (d *offloadDevice) Close() error {
	d.closeOnce.Do(func() {
		d.closed.Store(true)
		d.closeErr = d.f.Close()
	})
	return d.closeErr
}
