// Package capture turns the fault layer's packet events into pcapng captures
// and one-line packet logs, and detects TCP retransmissions.
//
// Create a Writer (Create or NewWriter) for --capture and a Logger (NewLogger)
// for --log-packets, and register them as fault.Observers. Both are safe for
// concurrent use and do not allocate per packet. A Writer writes whole blocks
// only and flushes by itself at least every FlushInterval, so a process
// killed with SIGKILL leaves a readable file missing at most the last
// interval's packets; call Flush on signals and Close at exit. Read captures back with
// NewReader; RetransmitTracker classifies TCP segments for logs and reports.
package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/bits"
	"os"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack/fault"
)

// pcapng constants (draft-ietf-opsawg-pcapng).
const (
	blockSHB = 0x0A0D0D0A // Section Header Block
	blockIDB = 0x00000001 // Interface Description Block
	blockEPB = 0x00000006 // Enhanced Packet Block

	byteOrderMagic = 0x1A2B3C4D

	optEndOfOpt  = 0
	optComment   = 1
	optEPBFlags  = 2 // epb_flags
	optIfName    = 2 // if_name
	optIfTSResol = 9
	optIfTSOff   = 14
	optUserAppl  = 4 // shb_userappl

	// LinkTypeRaw is LINKTYPE_RAW: raw IPv4 or IPv6 packets, no link header.
	LinkTypeRaw = 101

	// SnapLen is the largest number of bytes recorded per packet; longer
	// packets are truncated and keep their original length in the capture.
	SnapLen = 262144

	// maxOptLen is the largest option value a pcapng option can carry.
	maxOptLen = 0xffff

	epbHeaderLen = 28 // type, length, interface, ts high, ts low, caplen, origlen
	ifName       = "unplug"
)

// Option configures a Writer.
type Option func(*config)

type config struct {
	nanoseconds bool
	bufSize     int
	interval    time.Duration
}

// DefaultFlushInterval is how long a packet may wait in a Writer's buffer.
const DefaultFlushInterval = time.Second

// Nanoseconds records timestamps with nanosecond resolution (if_tsresol 9)
// instead of the default microseconds. Useful with virtual time, where many
// packets share one microsecond.
func Nanoseconds() Option { return func(c *config) { c.nanoseconds = true } }

// BufferSize sets the size of the write buffer (default 64 KiB, at least
// 4 KiB). Packets reach the underlying writer when the buffer fills, when
// the oldest buffered packet is FlushInterval old, on Flush, and on Close.
func BufferSize(n int) Option { return func(c *config) { c.bufSize = n } }

// FlushInterval sets how long a packet may wait in the buffer before the
// Writer flushes by itself (default DefaultFlushInterval; 0 or less:
// only when the buffer fills, on Flush and on Close).
func FlushInterval(d time.Duration) Option { return func(c *config) { c.interval = d } }

// ErrClosed is returned by Flush after Close.
var ErrClosed = errors.New("capture: writer closed")

// Writer writes the fault layer's packets to a pcapng stream: one section, one
// raw-IP interface named "unplug", one Enhanced Packet Block per packet with
// its direction (inbound = towards the peer) and, for drops and delays, a
// comment naming the rule.
//
// A Writer is a fault.Observer. Writes are buffered, and every write to the
// underlying writer is a run of whole blocks, so a file cut short by a
// killed process ends on a block boundary (a write the kernel itself cuts
// short, such as by a full disk, is the exception). The first write error
// stops the capture for good (see Err and OnError) while the run goes on.
type Writer struct {
	// OnError, when set before the first Observe, is called once with the
	// first write error (a full disk, a closed pipe). It runs on the packet
	// path, outside the Writer's lock, so it may call Err but must be quick.
	OnError func(error)

	mu       sync.Mutex
	out      io.Writer
	buf      []byte // whole blocks not yet written
	size     int    // flush when buf would grow past this
	interval time.Duration
	timer    *time.Timer // armed while buf holds packets; nil before the first
	armed    bool
	nano     bool
	err      error // first error; capture stopped
	reported bool  // OnError has been called
	closed   bool
	closeErr error
	lastTS   uint64 // the latest timestamp written, guarded by mu
}

var _ fault.Observer = (*Writer)(nil)

// NewWriter writes the pcapng section and interface headers to w and returns
// a Writer for the packets. The headers are flushed at once, so an unwritable
// destination fails here rather than silently later.
func NewWriter(w io.Writer, opts ...Option) (*Writer, error) {
	cfg := config{bufSize: 64 << 10, interval: DefaultFlushInterval}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.bufSize < 4096 {
		cfg.bufSize = 4096
	}
	cw := &Writer{out: w, buf: make([]byte, 0, cfg.bufSize), size: cfg.bufSize, interval: cfg.interval, nano: cfg.nanoseconds}
	cw.writeHeaders()
	if err := cw.flushLocked(); err != nil {
		return nil, fmt.Errorf("write capture header: %w", err)
	}
	return cw, nil
}

// Create creates (or truncates) the capture file at path and returns a Writer
// that closes it on Close.
func Create(path string, opts ...Option) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, notWritable(path, err)
	}
	w, err := NewWriter(f, opts...)
	if err != nil {
		_ = f.Close()
		return nil, notWritable(path, err)
	}
	return w, nil
}

// notWritable builds the one-line user-facing error for a capture path.
func notWritable(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err // the path is named once, below
	}
	return fmt.Errorf("capture file %q is not writable: %w (choose another --pcap path)", path, err)
}

// writeHeaders buffers the Section Header Block and the Interface Description
// Block. Errors surface on the following Flush.
func (w *Writer) writeHeaders() {
	le := binary.LittleEndian
	var b []byte

	// Section Header Block with shb_userappl.
	shbOpts := optLen(len(ifName)) + 4
	shbLen := 28 + shbOpts
	b = le.AppendUint32(b, blockSHB)
	b = le.AppendUint32(b, uint32(shbLen))
	b = le.AppendUint32(b, byteOrderMagic)
	b = le.AppendUint16(b, 1) // major
	b = le.AppendUint16(b, 0) // minor
	b = le.AppendUint64(b, ^uint64(0))
	b = appendOpt(b, optUserAppl, ifName)
	b = le.AppendUint32(b, optEndOfOpt)
	b = le.AppendUint32(b, uint32(shbLen))

	// Interface Description Block with if_name and, for nanoseconds, if_tsresol.
	idbOpts := optLen(len(ifName)) + 4
	if w.nano {
		idbOpts += optLen(1)
	}
	idbLen := 20 + idbOpts
	b = le.AppendUint32(b, blockIDB)
	b = le.AppendUint32(b, uint32(idbLen))
	b = le.AppendUint16(b, LinkTypeRaw)
	b = le.AppendUint16(b, 0)
	b = le.AppendUint32(b, SnapLen)
	b = appendOpt(b, optIfName, ifName)
	if w.nano {
		b = appendOpt(b, optIfTSResol, "\x09")
	}
	b = le.AppendUint32(b, optEndOfOpt)
	b = le.AppendUint32(b, uint32(idbLen))

	w.buf = append(w.buf, b...)
}

// flushLocked writes the buffered blocks in one write.
func (w *Writer) flushLocked() error {
	if len(w.buf) == 0 {
		return nil
	}
	n, err := w.out.Write(w.buf)
	if err == nil && n < len(w.buf) {
		err = io.ErrShortWrite
	}
	w.buf = w.buf[:0]
	return err
}

// armLocked makes sure a flush is due within the interval of the oldest
// buffered packet. The timer is a time.AfterFunc: no goroutine waits
// while nothing is buffered.
func (w *Writer) armLocked() {
	if w.armed || w.interval <= 0 {
		return
	}
	w.armed = true
	if w.timer == nil {
		w.timer = time.AfterFunc(w.interval, w.tick)
		return
	}
	w.timer.Reset(w.interval)
}

// tick is the interval flush.
func (w *Writer) tick() {
	w.mu.Lock()
	w.armed = false
	if w.closed || w.err != nil {
		w.mu.Unlock()
		return
	}
	w.unlockReporting(w.flushLocked())
}

// optLen is the encoded size of an option with an n-byte value.
func optLen(n int) int { return 4 + pad4(n) }

// pad4 rounds n up to a multiple of 4.
func pad4(n int) int { return (n + 3) &^ 3 }

var zeros [4]byte

func appendOpt(b []byte, code uint16, v string) []byte {
	b = binary.LittleEndian.AppendUint16(b, code)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
	b = append(b, v...)
	return append(b, zeros[:pad4(len(v))-len(v)]...)
}

// Observe writes ev as one Enhanced Packet Block. It implements
// fault.Observer. After the first write error, or after Close, it does
// nothing.
func (w *Writer) Observe(ev *fault.Event) {
	if ev == nil {
		return
	}
	w.mu.Lock()
	if w.err != nil || w.closed {
		w.mu.Unlock()
		return
	}
	w.unlockReporting(w.writeEPB(ev))
}

// unlockReporting ends a locked write: err, if any, becomes the capture's
// first error; the lock is released before OnError runs (once). It returns
// the capture's first error.
func (w *Writer) unlockReporting(err error) error {
	var report func(error)
	if err != nil {
		report = w.failLocked(err)
	}
	first := w.err
	w.mu.Unlock()
	if report != nil {
		report(first)
	}
	return first
}

// failLocked records err as the first error and returns the callback to run
// (outside the lock), or nil when there is none or it already ran.
func (w *Writer) failLocked(err error) func(error) {
	if w.err == nil {
		w.err = fmt.Errorf("write capture: %w", err)
	}
	if w.reported || w.OnError == nil {
		return nil
	}
	w.reported = true
	return w.OnError
}

// writeEPB buffers one Enhanced Packet Block without allocating.
func (w *Writer) writeEPB(ev *fault.Event) error {
	data := ev.Data
	origLen := len(data)
	if len(data) > SnapLen {
		data = data[:SnapLen]
	}
	comment := ev.Comment
	if len(comment) > maxOptLen {
		comment = truncateUTF8(comment, maxOptLen)
	}
	var dir packet.Direction
	if ev.Packet != nil {
		dir = ev.Packet.Dir
	}
	// epb_flags bits 0-1: 01 inbound, 10 outbound; packet.In and packet.Out
	// have exactly these values.
	var flags uint32
	if dir == packet.In || dir == packet.Out {
		flags = uint32(dir)
	}

	optsLen := 0
	if flags != 0 {
		optsLen += optLen(4)
	}
	if comment != "" {
		optsLen += optLen(len(comment))
	}
	if optsLen != 0 {
		optsLen += 4 // opt_endofopt
	}
	total := epbHeaderLen + pad4(len(data)) + optsLen + 4

	// Only whole blocks reach the underlying writer: flush what is
	// buffered first if this one does not fit (a block larger than the
	// buffer goes out alone).
	if len(w.buf)+total > w.size && len(w.buf) > 0 {
		if err := w.flushLocked(); err != nil {
			return err
		}
	}
	// Inbound and outbound packets are timed on their own goroutines
	// before they take the lock, so one may reach the file a few
	// microseconds after a later-timed one: keep the file's timestamps
	// non-decreasing, in the order the packets are written.
	ts := max(w.timestamp(ev.Time), w.lastTS)
	w.lastTS = ts
	le := binary.LittleEndian
	b := w.buf
	b = le.AppendUint32(b, blockEPB)
	b = le.AppendUint32(b, uint32(total))
	b = le.AppendUint32(b, 0) // interface 0
	b = le.AppendUint32(b, uint32(ts>>32))
	b = le.AppendUint32(b, uint32(ts))
	b = le.AppendUint32(b, uint32(len(data)))
	b = le.AppendUint32(b, uint32(origLen))
	b = append(b, data...)
	b = append(b, zeros[:pad4(len(data))-len(data)]...)
	if flags != 0 {
		b = le.AppendUint16(b, optEPBFlags)
		b = le.AppendUint16(b, 4)
		b = le.AppendUint32(b, flags)
	}
	if comment != "" {
		b = le.AppendUint16(b, optComment)
		b = le.AppendUint16(b, uint16(len(comment)))
		b = append(b, comment...)
		b = append(b, zeros[:pad4(len(comment))-len(comment)]...)
	}
	if optsLen != 0 {
		b = le.AppendUint32(b, optEndOfOpt)
	}
	b = le.AppendUint32(b, uint32(total))
	w.buf = b
	if len(w.buf) >= w.size {
		return w.flushLocked()
	}
	w.armLocked()
	return nil
}

// timestamp converts t to the interface's units since the Unix epoch. Times
// pcapng cannot express are clamped: before the epoch to the epoch, after
// 2^64 units (year 2554 in nanoseconds) to the largest timestamp.
func (w *Writer) timestamp(t time.Time) uint64 {
	sec := t.Unix()
	if sec < 0 {
		return 0
	}
	units, frac := uint64(1e6), uint64(t.Nanosecond())/1e3
	if w.nano {
		units, frac = 1e9, uint64(t.Nanosecond())
	}
	hi, lo := bits.Mul64(uint64(sec), units)
	ts, carry := bits.Add64(lo, frac, 0)
	if hi != 0 || carry != 0 {
		return math.MaxUint64
	}
	return ts
}

// truncateUTF8 cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncateUTF8(s string, n int) string {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Flush writes buffered packets to the underlying writer. It returns the
// capture's first error, if any; a failing Flush stops the capture like a
// failing Observe.
func (w *Writer) Flush() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return ErrClosed
	}
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	return w.unlockReporting(w.flushLocked())
}

// Close flushes buffered packets and closes the underlying writer if it is an
// io.Closer. It returns the capture's first error, if any. Later calls return
// the same result; Observe does nothing after Close.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		err := w.closeErr
		w.mu.Unlock()
		return err
	}
	w.closed = true
	if w.timer != nil {
		w.timer.Stop()
	}
	var report func(error)
	if w.err == nil {
		if err := w.flushLocked(); err != nil {
			report = w.failLocked(err)
		}
	}
	err := w.err
	werr := err
	if c, ok := w.out.(io.Closer); ok {
		if cerr := c.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close capture: %w", cerr)
		}
	}
	w.closeErr = err
	w.mu.Unlock()
	if report != nil {
		report(werr)
	}
	return err
}

// Err returns the first write error, or nil while the capture is healthy.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}
