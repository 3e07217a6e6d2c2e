package services

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// pattern returns n bytes no two nearby offsets of which repeat, so that a
// byte lost, doubled or moved shows.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i) ^ byte(i>>8)*31 ^ byte(i>>16)*7 ^ seed
	}
	return b
}

// slowReader reads c in small bites with pauses, so that the socket's
// buffer fills and the forward's writes to it come up short.
type slowReader struct{ c net.Conn }

func (r slowReader) Read(p []byte) (int, error) {
	time.Sleep(200 * time.Microsecond)
	return r.c.Read(p[:min(len(p), 3000)])
}

// TestForwardBulkExact moves several MiB each way through a forward to a
// real kernel socket on loopback, with an upstream that reads at once and
// one that reads slowly (the forward's writes to the socket then come up
// short and the rest is written later), and checks every byte in both
// directions and the byte counters.
func TestForwardBulkExact(t *testing.T) {
	const upBytes, downBytes = 6 << 20, 3 << 20
	for _, tt := range []struct {
		name string
		slow bool
	}{{"fast upstream", false}, {"slow upstream", true}} {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan []byte, 1)
			up := newUpstream(t, func(c net.Conn) {
				go c.Write(pattern(downBytes, 2))
				var r io.Reader = c
				if tt.slow {
					r = slowReader{c}
				}
				b, _ := io.ReadAll(r)
				got <- b
			})
			h := newHarness(t)
			set := h.start(t, Config{Forwards: []Forward{{Port: 9000, Target: up.Addr().String()}}})
			c := h.dial(t, peerV4, 9000)
			sent := pattern(upBytes, 1)
			go func() {
				c.Write(sent)
				c.CloseWrite()
			}()
			back, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("client read: %v", err)
			}
			if want := pattern(downBytes, 2); !bytes.Equal(back, want) {
				t.Fatalf("client got %d bytes, differing from the upstream's %d at byte %d", len(back), len(want), firstDifference(back, want))
			}
			select {
			case b := <-got:
				if !bytes.Equal(b, sent) {
					t.Fatalf("the upstream got %d bytes, differing from the client's %d at byte %d", len(b), len(sent), firstDifference(b, sent))
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the upstream did not see the client's end")
			}
			waitFor(t, set, "forward to finish", func() bool { return len(set.Conns()) == 0 })
			if st := statsOf(t, set, ServiceForward, 9000); st.BytesIn != upBytes || st.BytesOut != downBytes {
				t.Errorf("forward stats = %+v, want %d in, %d out", st, upBytes, downBytes)
			}
		})
	}
}

func firstDifference(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestRawReader reads a kernel socket the way the upstream → client copy
// does, and checks that it behaves as the socket's own Read would: data in
// order, EOF at the peer's FIN, the errno of a reset, the deadline.
func TestRawReader(t *testing.T) {
	for _, tt := range []struct {
		name    string
		peer    func(c *net.TCPConn)
		want    string
		wantErr func(error) bool
	}{
		{"data then FIN", func(c *net.TCPConn) { c.Write([]byte("hello ")); c.Write([]byte("world")); c.CloseWrite() }, "hello world", func(err error) bool { return err == nil }},
		{"reset", func(c *net.TCPConn) {
			c.Write([]byte("x"))
			time.Sleep(20 * time.Millisecond)
			c.SetLinger(0)
			c.Close()
		}, "x", func(err error) bool { return errors.Is(err, syscall.ECONNRESET) }},
		{"deadline", func(c *net.TCPConn) { c.Write([]byte("late")) }, "late", func(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			done, exited := make(chan struct{}), make(chan struct{})
			t.Cleanup(func() {
				ln.Close()
				close(done)
				<-exited
			})
			go func() {
				defer close(exited)
				c, err := ln.Accept()
				if err != nil {
					return
				}
				tt.peer(c.(*net.TCPConn))
				<-done // the deadline row's peer stays open
				c.Close()
			}()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			rc, err := c.(*net.TCPConn).SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			r := &rawReader{rc: rc}
			if n, err := r.Read(nil); n != 0 || err != nil {
				t.Errorf("Read(nil) = %d, %v; want 0, nil", n, err)
			}
			var got bytes.Buffer
			_, err = io.Copy(&got, struct{ io.Reader }{r})
			if got.String() != tt.want {
				t.Errorf("read %q, want %q", got.String(), tt.want)
			}
			if !tt.wantErr(err) {
				t.Errorf("error %v is not the one the socket gives", err)
			}
		})
	}
}
