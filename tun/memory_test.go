package tun

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
)

func TestMemoryPairDelivers(t *testing.T) {
	tests := []struct {
		name    string
		packets [][]byte
	}{
		{"one packet", [][]byte{[]byte("hello")}},
		{"order kept", [][]byte{{1}, {2, 2}, {3, 3, 3}}},
		{"full MTU", [][]byte{bytes.Repeat([]byte{0xab}, 1500)}},
		{"empty packet", [][]byte{{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := NewPair(1500)
			t.Cleanup(func() { a.Close(); b.Close() })
			for _, p := range tt.packets {
				if n, err := a.Write(p); err != nil || n != len(p) {
					t.Fatalf("Write(%d bytes) = %d, %v", len(p), n, err)
				}
			}
			buf := make([]byte, b.MTU())
			for i, want := range tt.packets {
				n, err := b.Read(buf)
				if err != nil {
					t.Fatalf("Read #%d: %v", i, err)
				}
				if !bytes.Equal(buf[:n], want) {
					t.Fatalf("Read #%d = %x, want %x", i, buf[:n], want)
				}
			}
		})
	}
}

func TestMemoryPairBothDirections(t *testing.T) {
	a, b := NewPair(0)
	t.Cleanup(func() { a.Close(); b.Close() })
	if a.MTU() != DefaultMTU || b.MTU() != DefaultMTU {
		t.Fatalf("MTU = %d, %d; want %d", a.MTU(), b.MTU(), DefaultMTU)
	}
	if a.Name() == b.Name() {
		t.Fatalf("both ends are named %q", a.Name())
	}
	for _, d := range []struct{ from, to Device }{{a, b}, {b, a}} {
		msg := []byte("from " + d.from.Name())
		if _, err := d.from.Write(msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		n, err := d.to.Read(buf)
		if err != nil || string(buf[:n]) != string(msg) {
			t.Fatalf("%s read %q, %v; want %q", d.to.Name(), buf[:n], err, msg)
		}
	}
}

func TestMemoryPairCopiesPackets(t *testing.T) {
	a, b := NewPair(64)
	t.Cleanup(func() { a.Close(); b.Close() })
	p := []byte("original")
	a.Write(p)
	copy(p, "XXXXXXXX")
	buf := make([]byte, 64)
	n, err := b.Read(buf)
	if err != nil || string(buf[:n]) != "original" {
		t.Fatalf("Read = %q, %v; the writer's later change leaked in", buf[:n], err)
	}
}

func TestMemoryPairDropsWhenFull(t *testing.T) {
	const extra = 10
	a, b := NewMemoryPair(64)
	t.Cleanup(func() { a.Close(); b.Close() })
	for i := range MemoryQueueLen + extra {
		if n, err := a.Write([]byte{byte(i)}); err != nil || n != 1 {
			t.Fatalf("Write #%d = %d, %v; a full queue must drop, not fail", i, n, err)
		}
	}
	if got := a.Dropped(); got != extra {
		t.Fatalf("Dropped() = %d, want %d", got, extra)
	}
	if got := b.Dropped(); got != 0 {
		t.Fatalf("reader's Dropped() = %d, want 0", got)
	}
	buf := make([]byte, 64)
	for i := range MemoryQueueLen {
		n, err := b.Read(buf)
		if err != nil || n != 1 || buf[0] != byte(i) {
			t.Fatalf("Read #%d = %v, %v; want the first %d packets in order", i, buf[:n], err, MemoryQueueLen)
		}
	}
}

func TestMemoryPairErrors(t *testing.T) {
	tests := []struct {
		name    string
		run     func(a, b *MemoryDevice) error
		want    error
		dropped uint64
	}{
		{"write after close", func(a, b *MemoryDevice) error {
			a.Close()
			_, err := a.Write([]byte{1})
			return err
		}, ErrClosed, 0},
		{"read after close", func(a, b *MemoryDevice) error {
			b.Write([]byte{1})
			a.Close()
			_, err := a.Read(make([]byte, 8))
			return err
		}, ErrClosed, 0},
		{"write to closed peer drops", func(a, b *MemoryDevice) error {
			b.Close()
			n, err := a.Write([]byte{1, 2})
			if n != 2 {
				return fmt.Errorf("n = %d", n)
			}
			return err
		}, nil, 1},
		{"short read buffer", func(a, b *MemoryDevice) error {
			a.Write([]byte{1, 2, 3, 4})
			n, err := b.Read(make([]byte, 2))
			if n != 2 {
				return fmt.Errorf("n = %d", n)
			}
			return err
		}, io.ErrShortBuffer, 0},
		{"double close", func(a, b *MemoryDevice) error {
			a.Close()
			return a.Close()
		}, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := NewMemoryPair(8)
			t.Cleanup(func() { a.Close(); b.Close() })
			err := tt.run(a, b)
			if (tt.want == nil && err != nil) || !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if got := a.Dropped(); got != tt.dropped {
				t.Fatalf("Dropped() = %d, want %d", got, tt.dropped)
			}
		})
	}
}

func TestMemoryPairRejectsOversizePacket(t *testing.T) {
	a, b := NewMemoryPair(8)
	t.Cleanup(func() { a.Close(); b.Close() })
	if _, err := a.Write(make([]byte, 9)); err == nil {
		t.Fatal("writing 9 bytes at MTU 8 succeeded")
	}
	if a.Dropped() != 0 {
		t.Fatal("a rejected packet was counted as dropped")
	}
}

func TestMemoryCloseUnblocksReader(t *testing.T) {
	a, b := NewPair(64)
	t.Cleanup(func() { b.Close() })
	errc := make(chan error, 1)
	go func() {
		_, err := a.Read(make([]byte, 64))
		errc <- err
	}()
	a.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("blocked Read returned %v, want ErrClosed", err)
	}
}

func TestMemoryConcurrentWriters(t *testing.T) {
	const writers, each = 8, 100 // 800 packets: fits the queue, none dropped
	a, b := NewMemoryPair(64)
	t.Cleanup(func() { a.Close(); b.Close() })
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				a.Write([]byte{byte(w), byte(i)})
			}
		})
	}
	wg.Wait()
	next := make([]int, writers)
	buf := make([]byte, 64)
	for range writers * each {
		n, err := b.Read(buf)
		if err != nil || n != 2 {
			t.Fatalf("Read = %d, %v", n, err)
		}
		w, i := int(buf[0]), int(buf[1])
		if i != next[w] {
			t.Fatalf("writer %d: got packet %d, want %d (per-writer order lost)", w, i, next[w])
		}
		next[w]++
	}
	if a.Dropped() != 0 {
		t.Fatalf("Dropped() = %d, want 0", a.Dropped())
	}
}
