package bench

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// TestStartUpstreams checks that the forwarding rows' upstreams are served
// by another process: once this process has closed its listeners, the
// three services still answer, and they stop answering when stop returns.
func TestStartUpstreams(t *testing.T) {
	var ls [3]net.Listener
	var addrs [3]string
	for i := range ls {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls[i], addrs[i] = l, l.Addr().String()
	}
	stop, err := startUpstreams(ls)
	for _, l := range ls {
		l.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
	})
	dial := func(i int) net.Conn {
		t.Helper()
		c, err := net.DialTimeout("tcp4", addrs[i], safetyTimeout)
		if err != nil {
			t.Fatalf("upstream %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(safetyTimeout))
		return c
	}

	// discard: takes what is sent, answers the half-close with its own.
	c := dial(0)
	if _, err := c.Write(make([]byte, 1<<20)); err != nil {
		t.Fatalf("discard: %v", err)
	}
	c.(*net.TCPConn).CloseWrite()
	if n, err := io.Copy(io.Discard, c); n != 0 || err != nil {
		t.Fatalf("discard answered %d bytes, %v; want nothing and its FIN", n, err)
	}
	// source: writes without being asked.
	if _, err := io.ReadFull(dial(1), make([]byte, 1<<20)); err != nil {
		t.Fatalf("source: %v", err)
	}
	// echo: returns what it gets.
	c = dial(2)
	msg := []byte("unplug upstream echo")
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("echo: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo returned %q, %v; want %q", got, err, msg)
	}

	stop()
	stopped = true
	for i, a := range addrs {
		if c, err := net.DialTimeout("tcp4", a, safetyTimeout); err == nil {
			c.Close()
			t.Errorf("upstream %d (%s) still accepts after stop", i, a)
		}
	}
}
