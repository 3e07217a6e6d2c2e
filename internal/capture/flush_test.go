package capture

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack/fault"
)

// blockWriter records every Write and checks that each one is a run of
// whole pcapng blocks.
type blockWriter struct {
	t      *testing.T
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
}

func (w *blockWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	for off := 0; off < len(p); {
		if len(p)-off < 12 {
			w.t.Errorf("write %d ends with %d bytes of a block", w.writes, len(p)-off)
			break
		}
		n := int(binary.LittleEndian.Uint32(p[off+4:]))
		if n < 12 || off+n > len(p) {
			w.t.Errorf("write %d cuts a %d-byte block at %d of %d bytes", w.writes, n, len(p)-off, n)
			break
		}
		off += n
	}
	return w.buf.Write(p)
}

func (w *blockWriter) snapshot() ([]byte, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Clone(w.buf.Bytes()), w.writes
}

// TestWriterWritesWholeBlocks fills a small buffer with packets of every
// size up to larger than the buffer: every write must end on a block
// boundary, and everything reads back.
func TestWriterWritesWholeBlocks(t *testing.T) {
	out := &blockWriter{t: t}
	w, err := NewWriter(out, BufferSize(4096), FlushInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1700000000, 0)
	sizes := []int{0, 1, 100, 1400, 3000, 4000, 5000, 9000, 20000}
	for i := range 200 {
		n := sizes[i%len(sizes)]
		w.Observe(event(t, at, packet.In, udpPacket(app4, peer4, 1000, 9, n), fault.Decision{}, ""))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b, writes := out.snapshot()
	if recs := readAll(t, b); len(recs) != 200 {
		t.Errorf("read back %d packets, want 200", len(recs))
	}
	if writes < 10 {
		t.Errorf("%d writes: the buffer never filled", writes)
	}
}

// TestWriterFlushesByItself checks that a packet reaches the underlying
// writer within the flush interval without Flush or Close, and that a
// quiet writer leaves no goroutine behind (goleak checks at exit).
func TestWriterFlushesByItself(t *testing.T) {
	out := &blockWriter{t: t}
	w, err := NewWriter(out, FlushInterval(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	_, headerWrites := out.snapshot()
	for round := range 3 {
		w.Observe(event(t, time.Unix(1700000000, 0), packet.Out, udpPacket(peer4, app4, 9, 1000, 10), fault.Decision{}, ""))
		deadline := time.Now().Add(10 * time.Second) // a guard against hangs, not the assertion
		for {
			b, writes := out.snapshot()
			if writes > headerWrites+round {
				if recs := readAll(t, b); len(recs) != round+1 {
					t.Fatalf("round %d: %d packets written, want %d", round, len(recs), round+1)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the packet was never flushed", round)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}
