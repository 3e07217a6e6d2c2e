package capture

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack/fault"
	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sampleEvents is a short conversation covering both directions, both IP
// versions, every verdict, an unparseable packet and one without a parsed
// view.
func sampleEvents(t testing.TB) []*fault.Event {
	t.Helper()
	at := func(us int64) time.Time { return base.Add(time.Duration(us)*time.Microsecond + 789*time.Nanosecond) }
	syn := seg{src: app4, dst: peer4, sport: 40000, dport: 80, seq: 1000, flags: header.TCPFlagSyn, win: 64240}
	synack := seg{src: peer6, dst: app6, sport: 80, dport: 40001, seq: 5000, ack: 1001, flags: header.TCPFlagSyn | header.TCPFlagAck, win: 65535}
	data := seg{src: app4, dst: peer4, sport: 40000, dport: 80, seq: 1001, ack: 5001, flags: header.TCPFlagPsh | header.TCPFlagAck, win: 502, payload: 101}
	ack := seg{src: peer4, dst: app4, sport: 80, dport: 40000, seq: 5001, ack: 1102, flags: header.TCPFlagAck, win: 65535}
	return []*fault.Event{
		event(t, at(0), packet.In, syn.build(), fault.Decision{}, ""),
		event(t, at(120), packet.Out, synack.build(), fault.Decision{}, ""),
		event(t, at(300), packet.In, data.build(), fault.Decision{Verdict: fault.Dropped, Rule: 1}, "dropped by rule 1: drop dir=in"),
		event(t, at(400), packet.Out, ack.build(), fault.Decision{Verdict: fault.Delayed, Rule: 2, Delay: 200 * time.Millisecond}, "delayed 200ms by rule 2: delay 200ms dir=out"),
		event(t, at(500), packet.In, []byte{0xff, 1, 2}, fault.Decision{}, ""),
		{Time: at(600), Data: []byte{0x45}, Comment: "no parsed view"},
	}
}

func writeAll(t testing.TB, evs []*fault.Event, opts ...Option) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, opts...)
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	for _, ev := range evs {
		w.Observe(ev)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return buf.Bytes()
}

func readAll(t testing.TB, b []byte) []Record {
	t.Helper()
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	var recs []Record
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return recs
		}
		if err != nil {
			t.Fatalf("Next after %d records: %v", len(recs), err)
		}
		recs = append(recs, rec)
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		opts  []Option
		trunc time.Duration
	}{
		{"microseconds", nil, time.Microsecond},
		{"nanoseconds", []Option{Nanoseconds()}, time.Nanosecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs := sampleEvents(t)
			recs := readAll(t, writeAll(t, evs, tt.opts...))
			if len(recs) != len(evs) {
				t.Fatalf("read %d records, wrote %d", len(recs), len(evs))
			}
			for i, ev := range evs {
				rec := recs[i]
				var dir packet.Direction
				if ev.Packet != nil {
					dir = ev.Packet.Dir
				}
				if want := ev.Time.Truncate(tt.trunc); !rec.Time.Equal(want) {
					t.Errorf("record %d: time %v, want %v", i, rec.Time.UTC(), want)
				}
				if rec.Dir != dir {
					t.Errorf("record %d: dir %v, want %v", i, rec.Dir, dir)
				}
				if rec.Comment != ev.Comment {
					t.Errorf("record %d: comment %q, want %q", i, rec.Comment, ev.Comment)
				}
				if !bytes.Equal(rec.Data, ev.Data) || rec.OrigLen != len(ev.Data) {
					t.Errorf("record %d: data %x (orig %d), want %x", i, rec.Data, rec.OrigLen, ev.Data)
				}
				if rec.LinkType != LinkTypeRaw {
					t.Errorf("record %d: link type %d, want %d", i, rec.LinkType, LinkTypeRaw)
				}
			}
		})
	}
}

func TestWriterEdgeCases(t *testing.T) {
	long := strings.Repeat("é", 40000) // 80000 bytes, two per rune
	big := make([]byte, SnapLen+1000)
	big[0] = 0x45
	tests := []struct {
		name string
		ev   fault.Event
		want Record
	}{
		{
			name: "longer than snaplen",
			ev:   fault.Event{Time: base, Data: big},
			want: Record{Time: base, Data: big[:SnapLen], OrigLen: len(big)},
		},
		{
			name: "comment longer than an option",
			ev:   fault.Event{Time: base, Data: []byte{0x45}, Comment: long},
			want: Record{Time: base, Data: []byte{0x45}, OrigLen: 1, Comment: long[:65534]},
		},
		{
			name: "before the epoch",
			ev:   fault.Event{Time: time.Unix(-5, 0), Data: []byte{0x60}},
			want: Record{Time: time.Unix(0, 0), Data: []byte{0x60}, OrigLen: 1},
		},
		{
			name: "empty packet",
			ev:   fault.Event{Time: base},
			want: Record{Time: base, Data: []byte{}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs := readAll(t, writeAll(t, []*fault.Event{&tt.ev}))
			if len(recs) != 1 {
				t.Fatalf("read %d records, want 1", len(recs))
			}
			got := recs[0]
			if !got.Time.Equal(tt.want.Time) || !bytes.Equal(got.Data, tt.want.Data) ||
				got.OrigLen != tt.want.OrigLen || got.Comment != tt.want.Comment {
				t.Errorf("got time %v, %d bytes (orig %d), comment of %d bytes; want %v, %d bytes (orig %d), comment of %d bytes",
					got.Time, len(got.Data), got.OrigLen, len(got.Comment),
					tt.want.Time, len(tt.want.Data), tt.want.OrigLen, len(tt.want.Comment))
			}
			if !utf8.ValidString(got.Comment) {
				t.Errorf("comment is not valid UTF-8 after truncation")
			}
		})
	}
}

// TestTshark checks that Wireshark's reader agrees with ours on packet count,
// comments, directions and timestamps.
func TestTshark(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark not installed")
	}
	out, err := exec.Command(tshark, "-G", "fields").Output()
	if err != nil {
		t.Fatalf("tshark -G fields: %v", err)
	}
	// The packet comment field is frame.comment in Wireshark >= 3.6 and
	// pkt_comment (a protocol with field frame.comment) before.
	commentField := ""
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, "\t")
		if len(f) > 2 && f[0] == "F" && (f[2] == "frame.comment" || f[2] == "pkt_comment") {
			commentField = f[2]
			if f[2] == "frame.comment" {
				break
			}
		}
	}
	if commentField == "" {
		t.Fatal("tshark knows neither frame.comment nor pkt_comment")
	}

	for _, nano := range []bool{false, true} {
		t.Run(fmt.Sprintf("nano=%v", nano), func(t *testing.T) {
			evs := sampleEvents(t)
			var opts []Option
			if nano {
				opts = append(opts, Nanoseconds())
			}
			path := filepath.Join(t.TempDir(), "c.pcapng")
			if err := os.WriteFile(path, writeAll(t, evs, opts...), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(tshark, "-r", path, "-T", "fields", "-E", "separator=|",
				"-e", commentField, "-e", "frame.packet_flags_direction", "-e", "frame.time_epoch")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("tshark: %v\n%s", err, stderr.String())
			}
			lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
			if len(lines) != len(evs) {
				t.Fatalf("tshark read %d packets, want %d:\n%s", len(lines), len(evs), out)
			}
			for i, line := range lines {
				f := strings.Split(line, "|")
				if len(f) != 3 {
					t.Fatalf("packet %d: unexpected tshark line %q", i, line)
				}
				ev := evs[i]
				if f[0] != ev.Comment {
					t.Errorf("packet %d: tshark comment %q, want %q", i, f[0], ev.Comment)
				}
				wantDir := "0x00000000"
				if ev.Packet != nil {
					wantDir = fmt.Sprintf("0x%08x", uint32(ev.Packet.Dir))
				}
				if f[1] != wantDir && !(wantDir == "0x00000000" && f[1] == "") {
					t.Errorf("packet %d: tshark direction %q, want %q", i, f[1], wantDir)
				}
				res := time.Microsecond
				if nano {
					res = time.Nanosecond
				}
				want := ev.Time.Truncate(res)
				wantEpoch := fmt.Sprintf("%d.%09d", want.Unix(), want.Nanosecond())
				if got := epoch9(f[2]); got != wantEpoch {
					t.Errorf("packet %d: tshark time %s, want %s", i, f[2], wantEpoch)
				}
			}
		})
	}
}

// epoch9 normalises "seconds.fraction" to nine fractional digits.
func epoch9(s string) string {
	sec, frac, _ := strings.Cut(s, ".")
	if sec == "" || len(frac) > 9 {
		return s
	}
	return sec + "." + frac + strings.Repeat("0", 9-len(frac))
}

// failWriter accepts limit bytes, then fails every write with errDiskFull.
type failWriter struct {
	limit, n   int
	writes     int // calls after the failure started
	closed     int
	failedOnce bool
}

var errDiskFull = errors.New("no space left on device")

func (f *failWriter) Write(p []byte) (int, error) {
	if f.failedOnce {
		f.writes++
		return 0, errDiskFull
	}
	if f.n+len(p) > f.limit {
		k := f.limit - f.n
		f.n = f.limit
		f.failedOnce = true
		return k, errDiskFull
	}
	f.n += len(p)
	return len(p), nil
}

func (f *failWriter) Close() error { f.closed++; return nil }

func TestWriteErrorStopsCapture(t *testing.T) {
	evs := sampleEvents(t)
	tests := []struct {
		name  string
		limit int
		opts  []Option
		fails string // where the error shows: "observe" or "flush"
	}{
		{"buffer fills during observe", 600, []Option{BufferSize(1)}, "observe"},
		{"flush on signal", 600, nil, "flush"},
		{"close", 600, nil, "close"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fw := &failWriter{limit: tt.limit}
			w, err := NewWriter(fw, tt.opts...)
			if err != nil {
				t.Fatalf("NewWriter: %v", err)
			}
			var reported []error
			w.OnError = func(err error) {
				if w.Err() == nil { // must not deadlock, must be set
					t.Error("Err is nil inside OnError")
				}
				reported = append(reported, err)
			}
			for range 20 {
				for _, ev := range evs {
					w.Observe(ev)
				}
			}
			switch tt.fails {
			case "observe":
				if w.Err() == nil {
					t.Fatal("no error after filling the disk")
				}
			case "flush":
				if w.Err() != nil {
					t.Fatalf("error before flush: %v", w.Err())
				}
				if err := w.Flush(); !errors.Is(err, errDiskFull) {
					t.Fatalf("Flush = %v, want disk full", err)
				}
			}
			if tt.fails != "close" {
				writes := fw.writes
				for _, ev := range evs {
					w.Observe(ev) // no-ops, must not panic or write
				}
				if err := w.Flush(); !errors.Is(err, errDiskFull) {
					t.Errorf("Flush after failure = %v, want disk full", err)
				}
				if fw.writes != writes {
					t.Errorf("%d writes reached the full disk after the failure", fw.writes-writes)
				}
			}
			if err := w.Close(); !errors.Is(err, errDiskFull) {
				t.Errorf("Close = %v, want disk full", err)
			}
			if fw.closed != 1 {
				t.Errorf("underlying writer closed %d times, want 1", fw.closed)
			}
			if len(reported) != 1 || !errors.Is(reported[0], errDiskFull) {
				t.Errorf("OnError calls: %v, want exactly one disk-full error", reported)
			}
			if !errors.Is(w.Err(), errDiskFull) {
				t.Errorf("Err = %v, want disk full", w.Err())
			}
			w.Observe(evs[0]) // after Close: no-op
			if err := w.Close(); !errors.Is(err, errDiskFull) {
				t.Errorf("second Close = %v, want the same error", err)
			}
		})
	}
}

func TestNewWriterHeaderFails(t *testing.T) {
	if _, err := NewWriter(&failWriter{limit: 10}); !errors.Is(err, errDiskFull) {
		t.Fatalf("NewWriter on a full disk = %v, want disk full", err)
	}
}

func TestCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.pcapng")
	w, err := Create(path)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	evs := sampleEvents(t)
	for _, ev := range evs[:3] {
		w.Observe(ev)
	}
	if err := w.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(readAll(t, b)); n != 3 {
		t.Fatalf("after Flush the file holds %d packets, want 3", n)
	}
	w.Observe(evs[3])
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	w.Observe(evs[4]) // after Close: ignored
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := w.Flush(); !errors.Is(err, ErrClosed) {
		t.Errorf("Flush after Close = %v, want ErrClosed", err)
	}
	b, err = os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(readAll(t, b)); n != 4 {
		t.Fatalf("after Close the file holds %d packets, want 4", n)
	}
}

func TestCreateNotWritable(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		path string
		is   error
	}{
		{"missing directory", filepath.Join(dir, "nope", "c.pcapng"), fs.ErrNotExist},
		{"a directory", dir, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := Create(tt.path)
			if err == nil {
				_ = w.Close()
				t.Fatal("Create succeeded")
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.path) || !strings.Contains(msg, "not writable") || strings.Contains(msg, "\n") {
				t.Errorf("error %q should be one line naming %s and saying it is not writable", msg, tt.path)
			}
			if strings.Count(msg, tt.path) != 1 {
				t.Errorf("error %q names the path more than once", msg)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v does not wrap %v", err, tt.is)
			}
		})
	}
}

func TestConcurrentObserve(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, BufferSize(4096))
	if err != nil {
		t.Fatal(err)
	}
	evs := sampleEvents(t)
	const goroutines, rounds = 4, 50
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range rounds {
				for _, ev := range evs {
					w.Observe(ev)
				}
				if err := w.Flush(); err != nil {
					t.Errorf("Flush: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	recs := readAll(t, buf.Bytes())
	if want := goroutines * rounds * len(evs); len(recs) != want {
		t.Fatalf("read %d packets, want %d", len(recs), want)
	}
	comments := 0
	for _, r := range recs {
		if strings.HasPrefix(r.Comment, "dropped by rule 1") {
			comments++
		}
	}
	if comments != goroutines*rounds {
		t.Errorf("%d drop comments, want %d", comments, goroutines*rounds)
	}
}

func TestObserveDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	w, err := NewWriter(io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	evs := sampleEvents(t)
	allocs := testing.AllocsPerRun(100, func() {
		for _, ev := range evs {
			w.Observe(ev)
		}
	})
	if allocs != 0 {
		t.Errorf("Observe allocates %.1f times per %d packets, want 0", allocs, len(evs))
	}
}

func BenchmarkObserve(b *testing.B) {
	data := seg{src: app4, dst: peer4, sport: 40000, dport: 80, seq: 1, ack: 1,
		flags: header.TCPFlagAck | header.TCPFlagPsh, win: 502, payload: 1400}.build()
	ev := event(b, base, packet.In, data, fault.Decision{Verdict: fault.Dropped, Rule: 1}, "dropped by rule 1: drop dir=in")
	w, err := NewWriter(io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		w.Observe(ev)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
}
