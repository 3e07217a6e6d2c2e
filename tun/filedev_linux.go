package tun

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// fileDevice is a Device over a TUN file descriptor opened without packet
// information. The descriptor is non-blocking and driven by Go's poller, so
// Close unblocks a pending Read; Read and Write allocate nothing on success.
type fileDevice struct {
	f         *os.File
	name      string
	mtu       int
	closeOnce sync.Once
	closeErr  error
}

var _ Device = (*fileDevice)(nil)

// newFileDevice wraps f, which must be a non-blocking, close-on-exec TUN
// descriptor.
func newFileDevice(f *os.File, name string, mtu int) *fileDevice {
	return &fileDevice{f: f, name: name, mtu: mtu}
}

// Read implements Device.Read.
func (d *fileDevice) Read(p []byte) (int, error) {
	n, err := d.f.Read(p)
	if err != nil {
		return n, d.ioError("read", err)
	}
	return n, nil
}

// Write implements Device.Write.
func (d *fileDevice) Write(p []byte) (int, error) {
	n, err := d.f.Write(p)
	if err != nil {
		return n, d.ioError("write", err)
	}
	return n, nil
}

// ioError maps os.ErrClosed to ErrClosed, as the Device contract promises.
func (d *fileDevice) ioError(op string, err error) error {
	if errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("%s %s: %w", op, d.name, ErrClosed)
	}
	return fmt.Errorf("%s %s: %w", op, d.name, err)
}

// Name implements Device.Name.
func (d *fileDevice) Name() string { return d.name }

// MTU implements Device.MTU.
func (d *fileDevice) MTU() int { return d.mtu }

// Close implements Device.Close. Closing the last descriptor of a
// non-persistent TUN removes the interface; a persistent one stays.
func (d *fileDevice) Close() error {
	d.closeOnce.Do(func() { d.closeErr = d.f.Close() })
	return d.closeErr
}

// deviceFile returns the descriptor behind a device Create made.
func deviceFile(dev Device) *os.File {
	switch d := dev.(type) {
	case *offloadDevice:
		return d.f
	case *fileDevice:
		return d.f
	}
	panic(fmt.Sprintf("tun: no file behind %T", dev))
}

// dupFile returns a close-on-exec duplicate of f's descriptor without
// touching its blocking mode (f.Fd would switch it to blocking).
func dupFile(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("dup %s: %w", f.Name(), err)
	}
	nfd := -1
	var dupErr error
	if err := rc.Control(func(fd uintptr) {
		nfd, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, fmt.Errorf("dup %s: %w", f.Name(), err)
	}
	if dupErr != nil {
		return -1, fmt.Errorf("dup %s: %w", f.Name(), dupErr)
	}
	return nfd, nil
}

// fileFromFD wraps a received descriptor, making sure it is non-blocking so
// the returned *os.File uses Go's poller.
func fileFromFD(fd int, name string) (*os.File, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set %s non-blocking: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}
