package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack/fault"
)

// pcapngBuilder crafts pcapng streams by hand, in either byte order, so the
// reader is tested against input our writer never produces.
type pcapngBuilder struct {
	o interface {
		binary.ByteOrder
		binary.AppendByteOrder
	}
	b []byte
}

type opt struct {
	code uint16
	v    []byte
}

func (p *pcapngBuilder) opts(opts []opt) []byte {
	var b []byte
	for _, o := range opts {
		b = p.o.AppendUint16(b, o.code)
		b = p.o.AppendUint16(b, uint16(len(o.v)))
		b = append(b, o.v...)
		b = append(b, make([]byte, pad4(len(o.v))-len(o.v))...)
	}
	if len(opts) > 0 {
		b = p.o.AppendUint32(b, 0)
	}
	return b
}

// block appends a block of type typ with body (padded to 4 bytes).
func (p *pcapngBuilder) block(typ uint32, body []byte) *pcapngBuilder {
	body = append(body, make([]byte, pad4(len(body))-len(body))...)
	n := uint32(12 + len(body))
	p.b = p.o.AppendUint32(p.b, typ)
	p.b = p.o.AppendUint32(p.b, n)
	p.b = append(p.b, body...)
	p.b = p.o.AppendUint32(p.b, n)
	return p
}

func (p *pcapngBuilder) shb(opts ...opt) *pcapngBuilder {
	var body []byte
	body = p.o.AppendUint32(body, byteOrderMagic)
	body = p.o.AppendUint16(body, 1)
	body = p.o.AppendUint16(body, 0)
	body = p.o.AppendUint64(body, ^uint64(0))
	return p.block(blockSHB, append(body, p.opts(opts)...))
}

func (p *pcapngBuilder) idb(linkType uint16, opts ...opt) *pcapngBuilder {
	var body []byte
	body = p.o.AppendUint16(body, linkType)
	body = p.o.AppendUint16(body, 0)
	body = p.o.AppendUint32(body, 65535)
	return p.block(blockIDB, append(body, p.opts(opts)...))
}

func (p *pcapngBuilder) epb(iface uint32, ts uint64, data []byte, opts ...opt) *pcapngBuilder {
	var body []byte
	body = p.o.AppendUint32(body, iface)
	body = p.o.AppendUint32(body, uint32(ts>>32))
	body = p.o.AppendUint32(body, uint32(ts))
	body = p.o.AppendUint32(body, uint32(len(data)))
	body = p.o.AppendUint32(body, uint32(len(data)))
	body = append(body, data...)
	body = append(body, make([]byte, pad4(len(data))-len(data))...)
	return p.block(blockEPB, append(body, p.opts(opts)...))
}

func (p *pcapngBuilder) u32(v uint32) []byte { return p.o.AppendUint32(nil, v) }
func (p *pcapngBuilder) u64(v uint64) []byte { return p.o.AppendUint64(nil, v) }

func le() *pcapngBuilder { return &pcapngBuilder{o: binary.LittleEndian} }
func be() *pcapngBuilder { return &pcapngBuilder{o: binary.BigEndian} }

func TestReaderByteOrders(t *testing.T) {
	for _, p := range []*pcapngBuilder{le(), be()} {
		t.Run(p.o.String(), func(t *testing.T) {
			b := p.shb(opt{optUserAppl, []byte("other tool")}).
				idb(LinkTypeRaw, opt{optIfName, []byte("eth0")}).
				epb(0, 1_700_000_000_123_456, []byte{0x45, 1, 2, 3, 4},
					opt{optEPBFlags, p.u32(2)}, opt{optComment, []byte("hello")}, opt{optComment, []byte("second")}).
				epb(0, 1_700_000_001_000_000, []byte{0x60}, opt{optEPBFlags, p.u32(1 | 1<<5)}).
				b
			recs := readAll(t, b)
			want := []Record{
				{Time: time.UnixMicro(1_700_000_000_123_456), Data: []byte{0x45, 1, 2, 3, 4}, Dir: packet.Out, Comment: "hello", LinkType: LinkTypeRaw, OrigLen: 5},
				{Time: time.UnixMicro(1_700_000_001_000_000), Data: []byte{0x60}, Dir: packet.In, LinkType: LinkTypeRaw, OrigLen: 1},
			}
			if len(recs) != len(want) {
				t.Fatalf("read %d records, want %d", len(recs), len(want))
			}
			for i := range want {
				if !recordsEqual(recs[i], want[i]) {
					t.Errorf("record %d = %+v, want %+v", i, recs[i], want[i])
				}
			}
		})
	}
}

func recordsEqual(a, b Record) bool {
	return a.Time.Equal(b.Time) && bytes.Equal(a.Data, b.Data) && a.Dir == b.Dir &&
		a.Comment == b.Comment && a.LinkType == b.LinkType && a.OrigLen == b.OrigLen
}

func TestReaderTimestampResolution(t *testing.T) {
	p := le()
	tests := []struct {
		name string
		opts []opt
		ts   uint64
		want time.Time
	}{
		{"default microseconds", nil, 3_000_250, time.Unix(3, 250_000)},
		{"nanoseconds", []opt{{optIfTSResol, []byte{9}}}, 3_000_000_250, time.Unix(3, 250)},
		{"milliseconds", []opt{{optIfTSResol, []byte{3}}}, 3_250, time.Unix(3, 250_000_000)},
		{"seconds", []opt{{optIfTSResol, []byte{0}}}, 7, time.Unix(7, 0)},
		{"2^-10 seconds", []opt{{optIfTSResol, []byte{0x80 | 10}}}, 3*1024 + 512, time.Unix(3, 500_000_000)},
		{"picoseconds", []opt{{optIfTSResol, []byte{12}}}, 3_000_000_000_500, time.Unix(3, 0)},
		{"10^-19 seconds", []opt{{optIfTSResol, []byte{19}}}, ^uint64(0), time.Unix(1, 844674407)},
		{"offset", []opt{{optIfTSOff, p.u64(100)}}, 3_000_250, time.Unix(103, 250_000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := le().shb().idb(LinkTypeRaw, tt.opts...).epb(0, tt.ts, []byte{0x45}).b
			recs := readAll(t, b)
			if len(recs) != 1 || !recs[0].Time.Equal(tt.want) {
				t.Fatalf("got %v, want one record at %v", recs, tt.want)
			}
		})
	}
}

func TestReaderSectionsAndInterfaces(t *testing.T) {
	// Two interfaces in a little-endian section, then a big-endian section
	// that declares one: its packets must use the new section's table.
	first := le().shb().
		idb(1).                                              // Ethernet
		idb(LinkTypeRaw, opt{optIfTSResol, []byte{9}}).      // raw, ns
		epb(1, 5_000_000_000, []byte{0x45}).                 // 5 s
		block(5, []byte{1, 2, 3, 4}).                        // statistics: skipped
		block(0x40000BAD, []byte("custom block, skipped")).b // unknown: skipped
	second := be().shb().idb(LinkTypeRaw).epb(0, 7_000_000, []byte{0x60}).b
	recs := readAll(t, append(first, second...))
	if len(recs) != 2 {
		t.Fatalf("read %d records, want 2", len(recs))
	}
	if !recs[0].Time.Equal(time.Unix(5, 0)) || !recs[1].Time.Equal(time.Unix(7, 0)) {
		t.Errorf("times %v, %v; want 5 s and 7 s", recs[0].Time, recs[1].Time)
	}

	// Interface 1 does not exist in the second section.
	bad := append(append([]byte(nil), first...), be().shb().idb(LinkTypeRaw).epb(1, 0, []byte{0x60}).b...)
	r, err := NewReader(bytes.NewReader(bad))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); err != nil {
		t.Fatalf("first record: %v", err)
	}
	if _, err := r.Next(); !errors.Is(err, ErrFormat) {
		t.Fatalf("packet on an interface of a previous section: %v, want ErrFormat", err)
	}
}

func TestReaderRejectsCorruptInput(t *testing.T) {
	valid := func() *pcapngBuilder { return le().shb().idb(LinkTypeRaw) }
	patch := func(b []byte, off int, v uint32) []byte {
		b = append([]byte(nil), b...)
		binary.LittleEndian.PutUint32(b[off:], v)
		return b
	}
	good := valid().epb(0, 1, []byte{0x45, 0, 0, 0, 9}).b
	epbOff := len(valid().b)
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrFormat},
		{"short", []byte{0x0a, 0x0d}, ErrFormat},
		{"classic pcap", []byte{0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0}, ErrFormat},
		{"bad byte-order magic", patch(good, 8, 0xdeadbeef), ErrFormat},
		{"section header too short", patch(good, 4, 24), ErrFormat},
		{"section header trailer mismatch", patch(good, len(le().shb().b)-4, 99), ErrFormat},
		{"unsupported version", patch(good, 12, 2), ErrFormat},
		{"block length not a multiple of 4", patch(good, epbOff+4, 46), ErrFormat},
		{"block length below minimum", patch(good, epbOff+4, 8), ErrFormat},
		{"block length huge", patch(good, epbOff+4, 1<<30), ErrFormat},
		{"captured length beyond block", patch(good, epbOff+20, 100), ErrFormat},
		{"captured length near 2^32", patch(good, epbOff+20, 0xfffffffc), ErrFormat},
		{"undeclared interface", patch(good, epbOff+8, 3), ErrFormat},
		{"trailer mismatch", patch(good, len(good)-4, 44), ErrFormat},
		{"option overruns block", valid().block(blockEPB, append(
			le().epb(0, 0, nil).b[8:28], 2, 0, 0xff, 0)).b, ErrFormat},
		{"epb_flags of 3 bytes", valid().epb(0, 0, nil, opt{optEPBFlags, []byte{1, 0, 0}}).b, ErrFormat},
		{"if_tsresol too fine", le().shb().idb(LinkTypeRaw, opt{optIfTSResol, []byte{20}}).b, ErrFormat},
		{"if_tsresol 2^-64", le().shb().idb(LinkTypeRaw, opt{optIfTSResol, []byte{0x80 | 64}}).b, ErrFormat},
		{"if_tsoffset of 4 bytes", le().shb().idb(LinkTypeRaw, opt{optIfTSOff, []byte{1, 2, 3, 4}}).b, ErrFormat},
		{"interface block too short", le().shb().block(blockIDB, []byte{0, 0, 0, 0}).b, ErrFormat},
		{"packet block too short", valid().block(blockEPB, make([]byte, 16)).b, ErrFormat},
		{"truncated inside a block", good[:len(good)-3], io.ErrUnexpectedEOF},
		{"truncated inside a block header", good[:epbOff+5], io.ErrUnexpectedEOF},
		{"truncated section header", good[:10], io.ErrUnexpectedEOF},
		{"length larger than the stream", patch(good, epbOff+4, 1<<20), io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := readUntilError(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// readUntilError reads b to its end and returns the error that stopped it:
// nil for a clean end.
func readUntilError(b []byte) error {
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		return err
	}
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if _, again := r.Next(); again != err {
				return errors.New("error is not sticky")
			}
			return err
		}
		if rec.OrigLen < len(rec.Data) {
			return errors.New("OrigLen below captured length")
		}
	}
}

// TestReaderEveryTruncation cuts a real capture at every byte: the reader
// must return the complete packets before the cut and then a clean end only
// on a block boundary, an error otherwise.
func TestReaderEveryTruncation(t *testing.T) {
	full := writeAll(t, sampleEvents(t))
	// Block boundaries, from the total lengths.
	bounds := map[int]bool{}
	for off := 0; off < len(full); {
		off += int(binary.LittleEndian.Uint32(full[off+4:]))
		bounds[off] = true
	}
	headers := 2 // SHB and IDB
	for cut := range len(full) {
		r, err := NewReader(bytes.NewReader(full[:cut]))
		if err != nil {
			if cut >= 12 && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("cut at %d: NewReader: %v", cut, err)
			}
			continue
		}
		n := 0
		for {
			_, err = r.Next()
			if err != nil {
				break
			}
			n++
		}
		switch {
		case bounds[cut] && err != io.EOF:
			t.Fatalf("cut at block boundary %d: %v after %d packets, want clean EOF", cut, err, n)
		case !bounds[cut] && !errors.Is(err, io.ErrUnexpectedEOF):
			t.Fatalf("cut at %d: %v after %d packets, want ErrUnexpectedEOF", cut, err, n)
		}
		blocksBefore := 0
		for off := range bounds {
			if off <= cut {
				blocksBefore++
			}
		}
		if want := max(blocksBefore-headers, 0); n != want {
			t.Fatalf("cut at %d: read %d packets, want %d", cut, n, want)
		}
	}
}

// fuzzSeeds returns valid and almost valid captures to start fuzzing from.
func fuzzSeeds(t testing.TB) [][]byte {
	evs := sampleEvents(t)
	p := be()
	return [][]byte{
		writeAll(t, evs),
		writeAll(t, evs, Nanoseconds()),
		p.shb().idb(LinkTypeRaw, opt{optIfTSResol, []byte{0x80 | 20}}, opt{optIfTSOff, p.u64(5)}).
			epb(0, 1<<40, []byte{0x45, 1}, opt{optEPBFlags, p.u32(2)}, opt{optComment, []byte("c")}).b,
		le().shb().idb(1).idb(LinkTypeRaw).epb(1, 0, nil).block(5, nil).shb().b,
	}
}

func FuzzReader(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := readUntilError(b)
		if err != nil && !errors.Is(err, ErrFormat) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("unexpected error kind: %v", err)
		}
	})
}

func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{0x45, 0, 0, 20}, "dropped by rule 1: drop dir=in", uint8(1), int64(1_700_000_000), int64(123_456_789), false)
	f.Add([]byte{}, "", uint8(2), int64(0), int64(0), true)
	f.Add([]byte{0x60}, "\xff\xfe", uint8(3), int64(-1), int64(5), false)
	f.Add(bytes.Repeat([]byte{1}, 1000), strings.Repeat("é", 3), uint8(0), int64(1<<40), int64(1e9-1), true)
	f.Fuzz(func(t *testing.T, data []byte, comment string, dir uint8, sec, nsec int64, nano bool) {
		var opts []Option
		if nano {
			opts = append(opts, Nanoseconds())
		}
		sec %= 1 << 34 // up to year 2514: representable in nanoseconds
		at := time.Unix(sec, nsec%1e9)
		ev := &fault.Event{Time: at, Data: data, Comment: comment,
			Packet: &packet.Packet{Dir: packet.Direction(dir)}}
		next := &fault.Event{Time: at, Data: []byte{0x45}}
		recs := readAll(t, writeAll(t, []*fault.Event{ev, next}, opts...))
		if len(recs) != 2 {
			t.Fatalf("read %d records, want 2", len(recs))
		}
		got := recs[0]

		wantTime := at.Truncate(time.Microsecond)
		if nano {
			wantTime = at
		}
		if at.Unix() < 0 {
			wantTime = time.Unix(0, 0)
		}
		var wantDir packet.Direction
		if d := packet.Direction(dir); d == packet.In || d == packet.Out {
			wantDir = d
		}
		wantComment := comment
		if len(wantComment) > maxOptLen {
			wantComment = truncateUTF8(wantComment, maxOptLen)
		}
		want := Record{Time: wantTime, Data: data[:min(len(data), SnapLen)], Dir: wantDir,
			Comment: wantComment, LinkType: LinkTypeRaw, OrigLen: len(data)}
		if !recordsEqual(got, want) {
			t.Errorf("round trip: got time %v dir %v comment %q data %x orig %d; want time %v dir %v comment %q data %x orig %d",
				got.Time, got.Dir, got.Comment, got.Data, got.OrigLen,
				want.Time, want.Dir, want.Comment, want.Data, want.OrigLen)
		}
		if !bytes.Equal(recs[1].Data, next.Data) || recs[1].Comment != "" || recs[1].Dir != 0 {
			t.Errorf("packet after the fuzzed one read back as %+v", recs[1])
		}
	})
}

// TestReadFile reads a whole capture back, and fails on one cut inside its
// last block, returning the packets before the cut.
func TestReadFile(t *testing.T) {
	evs := sampleEvents(t)
	full := writeAll(t, evs)
	dir := t.TempDir()
	tests := []struct {
		name    string
		data    []byte
		want    int
		wantErr error
	}{
		{"whole", full, len(evs), nil},
		{"cut in the last block", full[:len(full)-3], len(evs) - 1, io.ErrUnexpectedEOF},
		{"not a capture", []byte("hello, world"), 0, ErrFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".pcapng")
			if err := os.WriteFile(path, tt.data, 0o644); err != nil {
				t.Fatal(err)
			}
			recs, err := ReadFile(path)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("ReadFile: %v, want %v", err, tt.wantErr)
			}
			if len(recs) != tt.want {
				t.Errorf("read %d packets, want %d", len(recs), tt.want)
			}
		})
	}
	if _, err := ReadFile(filepath.Join(dir, "missing.pcapng")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
}
