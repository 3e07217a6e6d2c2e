package capture

import (
	"errors"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
)

// lateWriter discards its first skip bytes and passes the rest to w, so a
// writer's header can succeed before packets meet a real full device.
type lateWriter struct {
	skip int
	w    io.Writer
}

func (l *lateWriter) Write(p []byte) (int, error) {
	if l.skip >= len(p) {
		l.skip -= len(p)
		return len(p), nil
	}
	n := l.skip
	l.skip = 0
	m, err := l.w.Write(p[n:])
	return n + m, err
}

func TestDevFull(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	t.Run("create", func(t *testing.T) {
		w, err := Create("/dev/full")
		if err == nil {
			_ = w.Close()
			t.Fatal("Create(/dev/full) succeeded")
		}
		if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), `"/dev/full" is not writable`) {
			t.Errorf("Create(/dev/full) = %v, want ENOSPC naming the path", err)
		}
	})
	t.Run("during run", func(t *testing.T) {
		f, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.Close() })
		w, err := NewWriter(&lateWriter{skip: 1 << 10, w: f}, BufferSize(4096))
		if err != nil {
			t.Fatalf("NewWriter: %v", err)
		}
		calls := 0
		w.OnError = func(error) { calls++ }
		evs := sampleEvents(t)
		for range 100 {
			for _, ev := range evs {
				w.Observe(ev)
			}
		}
		if !errors.Is(w.Err(), syscall.ENOSPC) {
			t.Fatalf("Err = %v, want ENOSPC", w.Err())
		}
		if err := w.Flush(); !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("Flush = %v, want ENOSPC", err)
		}
		if err := w.Close(); !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("Close = %v, want ENOSPC", err)
		}
		if calls != 1 {
			t.Errorf("OnError called %d times, want 1", calls)
		}
	})
}
