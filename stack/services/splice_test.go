package services

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// chunkedReader returns its data in reads of the sizes given, cycling.
type chunkedReader struct {
	data  []byte
	sizes []int
	i     int
	err   error // returned after the data; nil means io.EOF
}

func (r *chunkedReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		return 0, io.EOF
	}
	n := min(len(p), len(r.data), r.sizes[r.i%len(r.sizes)])
	r.i++
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// recordingWriter keeps what it was given and the largest single write.
type recordingWriter struct {
	bytes.Buffer
	largest int
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	w.largest = max(w.largest, len(p))
	return w.Buffer.Write(p)
}

func TestCopyAdaptive(t *testing.T) {
	data := make([]byte, 3<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	boom := errors.New("boom")
	for _, tc := range []struct {
		name        string
		sizes       []int
		err         error
		wantLargest int
	}{
		{"bulk grows to the large buffer", []int{1 << 20}, nil, spliceLarge},
		{"small reads stay small", []int{1000, 7, 4096}, nil, 4096},
		{"alternating bulk and small", []int{1 << 20, 1 << 20, 100, 1 << 20}, nil, spliceLarge},
		{"exactly the small buffer grows", []int{spliceSmall}, nil, spliceSmall},
		{"read error after data", []int{50000}, boom, 50000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &chunkedReader{data: data, sizes: tc.sizes, err: tc.err}
			var w recordingWriter
			n, err := copyAdaptive(&w, r)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if n != int64(len(data)) || !bytes.Equal(w.Bytes(), data) {
				t.Fatalf("copied %d bytes, equal %v; want %d exact", n, bytes.Equal(w.Bytes(), data), len(data))
			}
			if w.largest != tc.wantLargest {
				t.Errorf("largest write %d, want %d", w.largest, tc.wantLargest)
			}
		})
	}
}

// shortWriter accepts at most n bytes per write without an error.
type shortWriter struct{ n int }

func (w shortWriter) Write(p []byte) (int, error) { return min(len(p), w.n), nil }

func TestCopyAdaptiveShortWrite(t *testing.T) {
	r := &chunkedReader{data: make([]byte, 100), sizes: []int{100}}
	if _, err := copyAdaptive(shortWriter{10}, r); !errors.Is(err, io.ErrShortWrite) {
		t.Fatalf("err = %v, want io.ErrShortWrite", err)
	}
}
