package tun

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// TUN offload flags (linux/if_tun.h): checksum offload, which TSO needs,
// and TCP segmentation offload for IPv4 and IPv6.
const tunOffloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6

// maxIovecs bounds one writev (the kernel's UIO_MAXIOV is 1024): the
// virtio-net header, the merged headers and every payload slice of the
// segments of a 64 KiB super-packet.
const maxIovecs = 256

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
	wsegs   []seg       // what the coalescer reads of the packets being written
	wone    [][]byte    // WriteBatch's packets as one-slice OutPackets
	wout    []OutPacket // WriteBatch's packets
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
// packet; false asks the poller to wait for readability. The descriptor is
// non-blocking, so the call never sleeps: it is a raw system call, which
// the Go runtime does not hand the P over for (see writev).
func (d *offloadDevice) readv(fd uintptr) bool {
	n, _, errno := unix.RawSyscall(unix.SYS_READV, fd, uintptr(unsafe.Pointer(&d.riov[0])), 2)
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

// writev runs on the poller: one writev of the prepared iovecs, a raw
// system call: the descriptor is non-blocking, but the kernel runs the
// receiving TCP's work for the packet inside the call (tens of µs), and as
// an ordinary system call that long it let sysmon take the P away on most
// writes and keep polling every 20 µs to do so.
func (d *offloadDevice) writev(fd uintptr) bool {
	_, _, errno := unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&d.wiov[0])), uintptr(d.wcnt))
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
	d.wone = append(d.wone[:0], pkts...)
	d.wout = d.wout[:0]
	for i := range d.wone {
		d.wout = append(d.wout, OutPacket{Data: d.wone[i : i+1 : i+1]})
	}
	writes, err := d.writePacketsLocked(d.wout, true)
	clear(d.wone)
	clear(d.wout)
	return writes, err
}

// WritePackets implements Offload.WritePackets.
func (d *offloadDevice) WritePackets(pkts []OutPacket) (int, error) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	return d.writePacketsLocked(pkts, false)
}

// writePacketsLocked writes pkts in order, each run the coalescer accepts
// as one super-packet; mergeAll lets it merge packets not marked Offload
// (WriteBatch, whose packets' checksums are replaced when merged).
func (d *offloadDevice) writePacketsLocked(pkts []OutPacket, mergeAll bool) (int, error) {
	segs := d.wsegs[:0]
	for _, p := range pkts {
		sg := seg{merge: (mergeAll || p.Offload) && p.GSO.Type == GSONone}
		if len(p.Data) > 0 {
			sg.head = p.Data[0]
		}
		for _, b := range p.Data {
			sg.size += len(b)
		}
		segs = append(segs, sg)
	}
	defer func() {
		clear(segs)
		d.wsegs = segs[:0]
	}()
	writes := 0
	for i := 0; i < len(pkts); {
		// A run may take as many packets as their slices fit in one writev.
		lim, iovs := i, 2
		for lim < len(pkts) && iovs+len(pkts[lim].Data) <= maxIovecs {
			iovs += len(pkts[lim].Data)
			lim++
		}
		n := 1
		if lim > i+1 {
			n = coalescableSegs(segs[i:lim])
		}
		var err error
		switch {
		case pkts[i].GSO.Type != GSONone:
			err = d.writeSuperLocked(pkts[i], segs[i])
		case n > 1:
			err = d.writeMergedLocked(pkts[i:i+n], segs[i:i+n])
		case segs[i].size > 0:
			err = d.writePacketLocked(pkts[i], segs[i])
		default:
			i++
			continue
		}
		writes++
		if errors.Is(err, ErrClosed) {
			return writes, err
		}
		i += n
	}
	return writes, nil
}

// addIovec appends b to the prepared iovecs (empty slices are skipped).
func (d *offloadDevice) addIovec(b []byte) {
	if len(b) == 0 || d.wcnt == maxIovecs {
		return
	}
	d.wiov[d.wcnt].Base = &b[0]
	d.wiov[d.wcnt].SetLen(len(b))
	d.wcnt++
}

// writePacketLocked writes one packet. A TCP segment marked Offload goes
// with NEEDS_CSUM and its pseudo-header sum, so the kernel finishes (or,
// delivering locally, trusts) its checksum; anything else behind an empty
// virtio-net header, so the kernel checks its checksums as usual.
func (d *offloadDevice) writePacketLocked(p OutPacket, s seg) error {
	clear(d.wvnet[:])
	d.wcnt = 0
	d.addIovec(d.wvnet[:])
	ipLen, hdrLen, ok := 0, 0, false
	if p.Offload {
		ipLen, hdrLen, ok = tcpHeaderSpan(s.head, s.size)
	}
	if !ok {
		for _, b := range p.Data {
			d.addIovec(b)
		}
		return d.writeLocked()
	}
	hdr := append(d.whdr[:0], s.head[:hdrLen]...)
	var addrSum uint16
	if ipLen == 20 {
		addrSum = checksum.Checksum(hdr[12:20], 0)
	} else {
		addrSum = checksum.Checksum(hdr[8:40], 0)
	}
	sum := checksum.Combine(addrSum, ipProtoTCP)
	sum = checksum.Combine(sum, uint16(s.size-ipLen))
	binary.BigEndian.PutUint16(hdr[ipLen+tcpCsumOffset:], sum)
	putVnetHdr(d.wvnet[:], GSO{NeedsCsum: true, CsumStart: uint16(ipLen), CsumOffset: tcpCsumOffset}, 0)
	d.addIovec(hdr)
	d.addIovec(s.head[hdrLen:])
	for _, b := range p.Data[1:] {
		d.addIovec(b)
	}
	return d.writeLocked()
}

// tcpHeaderSpan locates a TCP segment's headers in head (IPv4, or IPv6
// without extension headers) for a packet of size bytes.
func tcpHeaderSpan(head []byte, size int) (ipLen, hdrLen int, ok bool) {
	if len(head) < 20 {
		return 0, 0, false
	}
	switch head[0] >> 4 {
	case 4:
		ipLen = int(head[0]&0xf) * 4
		if ipLen < 20 || len(head) < ipLen || head[9] != ipProtoTCP || binary.BigEndian.Uint16(head[6:])&0x3fff != 0 {
			return 0, 0, false
		}
	case 6:
		if len(head) < 40 || head[6] != ipProtoTCP {
			return 0, 0, false
		}
		ipLen = 40
	default:
		return 0, 0, false
	}
	if len(head) < ipLen+20 {
		return 0, 0, false
	}
	hdrLen = ipLen + int(head[ipLen+12]>>4)*4
	if hdrLen < ipLen+20 || hdrLen > len(head) || hdrLen > size || hdrLen > maxHeaderLen {
		return 0, 0, false
	}
	return ipLen, hdrLen, true
}

// writeSuperLocked writes a super-packet as it is, behind a virtio-net
// header describing it; one the kernel could not parse is written as an
// ordinary packet (and lost, as on a wire: it exceeds the MTU).
func (d *offloadDevice) writeSuperLocked(p OutPacket, s seg) error {
	ipLen, hdrLen, ok := tcpHeaderSpan(s.head, s.size)
	if !ok {
		p.GSO = GSO{}
		return d.writePacketLocked(p, s)
	}
	g := p.GSO
	g.NeedsCsum, g.CsumStart, g.CsumOffset = true, uint16(ipLen), tcpCsumOffset
	putVnetHdr(d.wvnet[:], g, hdrLen)
	d.wcnt = 0
	d.addIovec(d.wvnet[:])
	for _, b := range p.Data {
		d.addIovec(b)
	}
	return d.writeLocked()
}

// writeMergedLocked writes a coalescable run as one super-packet.
func (d *offloadDevice) writeMergedLocked(run []OutPacket, segs []seg) error {
	hdr, g := mergeSegs(d.whdr[:], segs)
	putVnetHdr(d.wvnet[:], g, len(hdr))
	d.wcnt = 0
	d.addIovec(d.wvnet[:])
	d.addIovec(hdr)
	for _, p := range run {
		d.addIovec(p.Data[0][len(hdr):])
		for _, b := range p.Data[1:] {
			d.addIovec(b)
		}
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
