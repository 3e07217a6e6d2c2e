package tun

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// MemoryQueueLen is how many packets each direction of a memory pair
// buffers before further writes are dropped.
const MemoryQueueLen = 1024

// MemoryDevice is one end of an in-memory point-to-point link made by
// NewPair. It lets tests run a netstack against another netstack (or a test
// harness) without a TUN device, root, or a network namespace.
type MemoryDevice struct {
	name string
	mtu  int
	// in holds packets written by the peer; buffers come from pool.
	in   chan *[]byte
	peer *MemoryDevice
	pool *sync.Pool

	dropped   atomic.Uint64
	closed    chan struct{}
	closeOnce sync.Once
}

var _ Device = (*MemoryDevice)(nil)

// NewPair returns the two ends of an in-memory link: a packet written on
// one end is copied and read on the other. Each direction queues up to
// MemoryQueueLen packets; a write that finds the queue full (or the other
// end closed) is dropped and counted, as on a real link. mtu <= 0 means
// DefaultMTU.
func NewPair(mtu int) (Device, Device) {
	a, b := NewMemoryPair(mtu)
	return a, b
}

// NewMemoryPair is NewPair returning the concrete type, for callers that
// want Dropped.
func NewMemoryPair(mtu int) (*MemoryDevice, *MemoryDevice) {
	if mtu <= 0 {
		mtu = DefaultMTU
	}
	pool := &sync.Pool{New: func() any {
		b := make([]byte, mtu)
		return &b
	}}
	a := newMemoryDevice("memory-a", mtu, pool)
	b := newMemoryDevice("memory-b", mtu, pool)
	a.peer, b.peer = b, a
	return a, b
}

func newMemoryDevice(name string, mtu int, pool *sync.Pool) *MemoryDevice {
	return &MemoryDevice{
		name:   name,
		mtu:    mtu,
		in:     make(chan *[]byte, MemoryQueueLen),
		pool:   pool,
		closed: make(chan struct{}),
	}
}

// Read implements Device.Read. A packet longer than p is truncated to
// len(p) and reported with an error wrapping io.ErrShortBuffer.
func (d *MemoryDevice) Read(p []byte) (int, error) {
	select {
	case <-d.closed:
		// Checked first: select picks randomly among ready cases, and a
		// closed device must not hand out queued packets.
		return 0, fmt.Errorf("read %s: %w", d.name, ErrClosed)
	default:
	}
	select {
	case <-d.closed:
		return 0, fmt.Errorf("read %s: %w", d.name, ErrClosed)
	case buf := <-d.in:
		n := copy(p, *buf)
		short := n < len(*buf)
		d.pool.Put(buf)
		if short {
			return n, fmt.Errorf("read %s: %w", d.name, io.ErrShortBuffer)
		}
		return n, nil
	}
}

// Write implements Device.Write. It never blocks: when the peer's queue is
// full or the peer is closed the packet is dropped, counted in Dropped, and
// reported as written.
func (d *MemoryDevice) Write(p []byte) (int, error) {
	select {
	case <-d.closed:
		return 0, fmt.Errorf("write %s: %w", d.name, ErrClosed)
	default:
	}
	if len(p) > d.mtu {
		return 0, fmt.Errorf("write %s: packet of %d bytes exceeds MTU %d", d.name, len(p), d.mtu)
	}
	select {
	case <-d.peer.closed:
		d.dropped.Add(1)
		return len(p), nil
	default:
	}
	buf := d.pool.Get().(*[]byte)
	*buf = append((*buf)[:0], p...)
	select {
	case d.peer.in <- buf:
	default:
		d.pool.Put(buf)
		d.dropped.Add(1)
	}
	return len(p), nil
}

// Dropped returns how many packets written to d were discarded because the
// peer's queue was full or the peer was closed.
func (d *MemoryDevice) Dropped() uint64 { return d.dropped.Load() }

// Name implements Device.Name.
func (d *MemoryDevice) Name() string { return d.name }

// MTU implements Device.MTU.
func (d *MemoryDevice) MTU() int { return d.mtu }

// Close implements Device.Close. It unblocks a pending Read, which then
// returns ErrClosed; packets still queued for d are discarded. Closing one
// end does not close the other. Close is idempotent.
func (d *MemoryDevice) Close() error {
	d.closeOnce.Do(func() { close(d.closed) })
	return nil
}
