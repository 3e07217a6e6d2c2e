package capture

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"time"

	"github.com/unplug-dev/unplug/internal/packet"
)

// maxBlockLen bounds the size of one block the Reader accepts, so corrupt
// lengths cannot make it allocate without limit.
const maxBlockLen = 16 << 20

// ErrFormat is wrapped by every error the Reader returns for malformed input.
var ErrFormat = errors.New("pcapng: malformed capture")

// Record is one packet read back from a capture.
type Record struct {
	Time     time.Time
	Data     []byte           // captured bytes (raw IP for unplug's captures); owned by the caller
	Dir      packet.Direction // from epb_flags: packet.In (inbound), packet.Out (outbound), or 0
	Comment  string           // first opt_comment, "" when absent
	LinkType uint16           // the interface's link type (LinkTypeRaw for unplug's captures)
	OrigLen  int              // length of the packet on the wire, >= len(Data)
}

// Reader reads the Enhanced Packet Blocks of a pcapng stream, in either byte
// order, across any number of sections and interfaces. Other block types are
// skipped. It is meant for reading unplug's own captures back in tests and
// reports, not as a general pcapng library.
type Reader struct {
	r      *bufio.Reader
	order  binary.ByteOrder
	ifaces []iface
	buf    []byte
	err    error // sticky
}

type iface struct {
	linkType uint16
	units    uint64 // timestamp units per second
	offset   int64  // if_tsoffset, seconds
}

// NewReader reads the first Section Header Block from r and returns a Reader
// positioned at the first packet. It fails when r does not start with a
// pcapng section.
func NewReader(r io.Reader) (*Reader, error) {
	rd := &Reader{r: bufio.NewReader(r)}
	var hdr [8]byte
	if _, err := io.ReadFull(rd.r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: too short for a pcapng header", ErrFormat)
		}
		return nil, fmt.Errorf("read capture: %w", err)
	}
	if binary.LittleEndian.Uint32(hdr[0:4]) != blockSHB {
		return nil, fmt.Errorf("%w: not a pcapng file (no section header)", ErrFormat)
	}
	if err := rd.readSHB(hdr[4:8]); err != nil {
		return nil, err
	}
	return rd, nil
}

// Next returns the next packet. It returns io.EOF at the clean end of the
// stream, an error wrapping io.ErrUnexpectedEOF when the stream stops inside a
// block, and an error wrapping ErrFormat for corrupt input. Errors are sticky.
func (rd *Reader) Next() (Record, error) {
	if rd.err != nil {
		return Record{}, rd.err
	}
	rec, err := rd.next()
	if err != nil {
		rd.err = err
	}
	return rec, err
}

func (rd *Reader) next() (Record, error) {
	for {
		var hdr [8]byte
		n, err := io.ReadFull(rd.r, hdr[:])
		if err != nil {
			if n == 0 && errors.Is(err, io.EOF) {
				return Record{}, io.EOF
			}
			return Record{}, readErr(err)
		}
		typ := rd.order.Uint32(hdr[0:4])
		if typ == blockSHB { // palindromic: same in both byte orders
			if err := rd.readSHB(hdr[4:8]); err != nil {
				return Record{}, err
			}
			continue
		}
		body, err := rd.readBody(rd.order.Uint32(hdr[4:8]), 8)
		if err != nil {
			return Record{}, err
		}
		switch typ {
		case blockIDB:
			if err := rd.parseIDB(body); err != nil {
				return Record{}, err
			}
		case blockEPB:
			return rd.parseEPB(body)
		}
	}
}

// readErr maps a short read to io.ErrUnexpectedEOF.
func readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("read capture: truncated block: %w", io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("read capture: %w", err)
}

// readSHB reads a Section Header Block whose type has been consumed and whose
// raw length field is rawLen, and starts a new section.
func (rd *Reader) readSHB(rawLen []byte) error {
	var bom [4]byte
	if _, err := io.ReadFull(rd.r, bom[:]); err != nil {
		return readErr(err)
	}
	switch {
	case binary.LittleEndian.Uint32(bom[:]) == byteOrderMagic:
		rd.order = binary.LittleEndian
	case binary.BigEndian.Uint32(bom[:]) == byteOrderMagic:
		rd.order = binary.BigEndian
	default:
		return fmt.Errorf("%w: bad byte-order magic %x", ErrFormat, bom)
	}
	length := rd.order.Uint32(rawLen)
	if length < 28 {
		return fmt.Errorf("%w: section header of %d bytes", ErrFormat, length)
	}
	body, err := rd.readBody(length, 12)
	if err != nil {
		return err
	}
	if major := rd.order.Uint16(body[0:2]); major != 1 {
		return fmt.Errorf("%w: unsupported pcapng version %d", ErrFormat, major)
	}
	rd.ifaces = rd.ifaces[:0]
	return nil
}

// readBody reads the rest of a block of length bytes, of which consumed have
// been read, checks the trailing length, and returns the bytes in between.
// The result is valid until the next call.
func (rd *Reader) readBody(length uint32, consumed int) ([]byte, error) {
	if length%4 != 0 || length < uint32(consumed)+4 || length > maxBlockLen {
		return nil, fmt.Errorf("%w: bad block length %d", ErrFormat, length)
	}
	n := int(length) - consumed
	// Grow with the data actually read, so a lying length on a short stream
	// costs no more memory than the stream itself.
	rd.buf = rd.buf[:0]
	for len(rd.buf) < n {
		chunk := min(n-len(rd.buf), 64<<10)
		start := len(rd.buf)
		if cap(rd.buf)-start < chunk {
			nb := make([]byte, start, start+max(chunk, 2*cap(rd.buf)))
			copy(nb, rd.buf)
			rd.buf = nb
		}
		rd.buf = rd.buf[:start+chunk]
		if _, err := io.ReadFull(rd.r, rd.buf[start:]); err != nil {
			return nil, readErr(err)
		}
	}
	body, trailer := rd.buf[:n-4], rd.buf[n-4:]
	if got := rd.order.Uint32(trailer); got != length {
		return nil, fmt.Errorf("%w: block length %d, trailer says %d", ErrFormat, length, got)
	}
	return body, nil
}

// forEachOpt calls fn for each option in opts until opt_endofopt or the end.
func (rd *Reader) forEachOpt(opts []byte, fn func(code uint16, v []byte) error) error {
	for len(opts) >= 4 {
		code := rd.order.Uint16(opts[0:2])
		n := int(rd.order.Uint16(opts[2:4]))
		if code == optEndOfOpt {
			return nil
		}
		opts = opts[4:]
		if n > len(opts) {
			return fmt.Errorf("%w: option %d overruns its block", ErrFormat, code)
		}
		if err := fn(code, opts[:n]); err != nil {
			return err
		}
		opts = opts[min(pad4(n), len(opts)):] // tolerate missing final padding
	}
	return nil
}

func (rd *Reader) parseIDB(body []byte) error {
	if len(body) < 8 {
		return fmt.Errorf("%w: interface block of %d bytes", ErrFormat, len(body))
	}
	ifc := iface{linkType: rd.order.Uint16(body[0:2]), units: 1e6}
	err := rd.forEachOpt(body[8:], func(code uint16, v []byte) error {
		switch code {
		case optIfTSResol:
			if len(v) != 1 {
				return fmt.Errorf("%w: if_tsresol of %d bytes", ErrFormat, len(v))
			}
			u, ok := tsUnits(v[0])
			if !ok {
				return fmt.Errorf("%w: unsupported if_tsresol %#x", ErrFormat, v[0])
			}
			ifc.units = u
		case optIfTSOff:
			if len(v) != 8 {
				return fmt.Errorf("%w: if_tsoffset of %d bytes", ErrFormat, len(v))
			}
			ifc.offset = int64(rd.order.Uint64(v))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(rd.ifaces) >= 1<<16 {
		return fmt.Errorf("%w: too many interfaces", ErrFormat)
	}
	rd.ifaces = append(rd.ifaces, ifc)
	return nil
}

// tsUnits decodes if_tsresol into units per second.
func tsUnits(r byte) (uint64, bool) {
	exp := uint(r & 0x7f)
	if r&0x80 != 0 {
		if exp > 63 {
			return 0, false
		}
		return 1 << exp, true
	}
	if exp > 19 {
		return 0, false
	}
	u := uint64(1)
	for range exp {
		u *= 10
	}
	return u, true
}

func (rd *Reader) parseEPB(body []byte) (Record, error) {
	if len(body) < 20 {
		return Record{}, fmt.Errorf("%w: packet block of %d bytes", ErrFormat, len(body))
	}
	id := rd.order.Uint32(body[0:4])
	if uint64(id) >= uint64(len(rd.ifaces)) {
		return Record{}, fmt.Errorf("%w: packet on undeclared interface %d", ErrFormat, id)
	}
	ifc := rd.ifaces[id]
	ts := uint64(rd.order.Uint32(body[4:8]))<<32 | uint64(rd.order.Uint32(body[8:12]))
	capLen := uint64(rd.order.Uint32(body[12:16]))
	origLen := uint64(rd.order.Uint32(body[16:20]))
	rest := body[20:]
	if capLen > uint64(len(rest)) {
		return Record{}, fmt.Errorf("%w: captured length %d exceeds its block", ErrFormat, capLen)
	}
	rec := Record{
		Time:     tsTime(ts, ifc),
		Data:     append([]byte(nil), rest[:capLen]...),
		LinkType: ifc.linkType,
		OrigLen:  int(max(origLen, capLen)),
	}
	optStart := min(pad4(int(capLen)), len(rest))
	err := rd.forEachOpt(rest[optStart:], func(code uint16, v []byte) error {
		switch code {
		case optComment:
			if rec.Comment == "" {
				rec.Comment = string(v)
			}
		case optEPBFlags:
			if len(v) != 4 {
				return fmt.Errorf("%w: epb_flags of %d bytes", ErrFormat, len(v))
			}
			switch rd.order.Uint32(v) & 3 {
			case 1:
				rec.Dir = packet.In
			case 2:
				rec.Dir = packet.Out
			}
		}
		return nil
	})
	if err != nil {
		return Record{}, err
	}
	return rec, nil
}

// tsTime converts a timestamp in ifc's units to a time.Time.
func tsTime(ts uint64, ifc iface) time.Time {
	sec, rem := ts/ifc.units, ts%ifc.units
	// ns = rem * 1e9 / units, computed in 128 bits; rem < units, so the
	// quotient fits and Div64 cannot panic.
	hi, lo := bits.Mul64(rem, 1e9)
	ns, _ := bits.Div64(hi, lo, ifc.units)
	return time.Unix(int64(sec)+ifc.offset, int64(ns))
}

// ReadFile reads every packet of the capture at path. Unlike a loop that
// stops at the first error, it fails on a capture cut short inside a block,
// which is what tests of unplug's flushing (kill -9, signals) must see.
func ReadFile(path string) ([]Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rd, err := NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var recs []Record
	for {
		rec, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return recs, nil
		}
		if err != nil {
			return recs, fmt.Errorf("%s: record %d: %w", path, len(recs), err)
		}
		recs = append(recs, rec)
	}
}
