package vlink

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/unplug-dev/unplug/stack/services"
)

// pollerPair is a pair whose peer runs the built-in services through a
// services.Poller, polled at every settled instant.
func pollerPair(t *testing.T) (*Pair, *services.Poller) {
	t.Helper()
	p, err := NewPair(PairOptions{Seed: 1, Delay: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cfg := services.DefaultConfig()
	sv, err := services.NewPoller(p.Peer, NIC, cfg)
	if err != nil {
		p.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sv.Close()
		p.Close()
	})
	return p, sv
}

// until runs the pair, polling the services, until cond holds.
func until(t *testing.T, p *Pair, sv *services.Poller, cond func() bool) {
	t.Helper()
	err := p.RunUntil(func() bool {
		for sv.Poll() {
			p.Settle()
		}
		return cond()
	}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
}

// readAll reads c until EOF or an error other than would-block.
func readAll(c *Conn, into *bytes.Buffer) (done bool, err error) {
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		into.Write(buf[:n])
		switch {
		case errors.Is(err, io.EOF):
			return true, nil
		case errors.Is(err, ErrWouldBlock):
			return false, nil
		case err != nil:
			return true, err
		}
	}
}

// TestPollerServices: every built-in service answers in virtual time as
// the goroutine services do on the TUN path.
func TestPollerServices(t *testing.T) {
	tests := []struct {
		name  string
		port  uint16
		send  string
		check func(t *testing.T, got []byte)
	}{
		{"http 404", services.DefaultHTTPPort, "GET / HTTP/1.0\r\n\r\n", func(t *testing.T, got []byte) {
			if !bytes.HasPrefix(got, []byte("HTTP/1.0 404 ")) {
				t.Fatalf("response %q, want a 404", got)
			}
		}},
		{"http bytes", services.DefaultHTTPPort, "GET /bytes/100000 HTTP/1.0\r\n\r\n", func(t *testing.T, got []byte) {
			_, body, ok := bytes.Cut(got, []byte("\r\n\r\n"))
			if !ok || !bytes.Equal(body, services.Pattern(0, 100000)) {
				t.Fatalf("body of %d bytes, want 100000 bytes of the pattern", len(body))
			}
		}},
		{"echo", services.DefaultEchoPort, strings.Repeat("hello ", 20000), func(t *testing.T, got []byte) {
			if string(got) != strings.Repeat("hello ", 20000) {
				t.Fatalf("echoed %d bytes, want %d back unchanged", len(got), 6*20000)
			}
		}},
		{"discard", services.DefaultDiscardPort, "anything", func(t *testing.T, got []byte) {
			if len(got) != 0 {
				t.Fatalf("discard answered %q", got)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, sv := pollerPair(t)
			c, err := p.Connect(PeerAddr4.String(), tt.port, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			req := []byte(tt.send)
			var got bytes.Buffer
			until(t, p, sv, func() bool {
				if len(req) > 0 {
					n, _ := c.Write(req)
					if req = req[n:]; len(req) == 0 {
						c.CloseWrite()
					}
				}
				done, err := readAll(c, &got)
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				return done
			})
			tt.check(t, got.Bytes())
			if n := sv.Accepted(tt.port); n != 1 {
				t.Errorf("Accepted(%d) = %d, want 1", tt.port, n)
			}
		})
	}
}

// TestPollerSourceAndSink: source writes the pattern until the client
// stops reading; sink never reads, so the client's writes stop being
// accepted once the peer's window is full.
func TestPollerSourceAndSink(t *testing.T) {
	p, sv := pollerPair(t)
	src, err := p.Connect(PeerAddr4.String(), services.DefaultSourcePort, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	until(t, p, sv, func() bool {
		readAll(src, &got)
		return got.Len() >= 200000
	})
	if !bytes.Equal(got.Bytes(), services.Pattern(0, got.Len())) {
		t.Fatal("source did not send the pattern")
	}

	sink, err := p.Connect(PeerAddr4.String(), services.DefaultSinkPort, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	written := 0
	stalled := 0
	until(t, p, sv, func() bool {
		n, err := sink.Write(chunk)
		written += n
		if errors.Is(err, ErrWouldBlock) && n == 0 {
			stalled++
		}
		return stalled > 20
	})
	if written == 0 || written > 64<<20 {
		t.Fatalf("wrote %d bytes into the sink; want its window to fill", written)
	}
	stats := sv.Stats()
	for _, st := range stats {
		if st.Service == services.ServiceSink && (st.Accepted != 1 || st.BytesIn != 0) {
			t.Errorf("sink stats %+v, want one connection and nothing read", st)
		}
		if st.Service == services.ServiceSource && st.BytesOut < uint64(got.Len()) {
			t.Errorf("source stats %+v, want at least the %d bytes received", st, got.Len())
		}
	}
}

func TestPollerRefusesRealTimeOnly(t *testing.T) {
	p, err := NewPair(PairOptions{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	for _, cfg := range []services.Config{
		{HTTP: 80, Addrs: []tcpip.Address{services.DefaultAddrV4}, Forwards: []services.Forward{{Port: 8080, Target: "127.0.0.1:1"}}},
		{HTTP: 80, Addrs: []tcpip.Address{services.DefaultAddrV4}, Persona: services.Persona{Name: services.PersonaSlowReader, Rate: 1000}},
	} {
		if _, err := services.NewPoller(p.Peer, NIC, cfg); !errors.Is(err, services.ErrNeedsRealTime) {
			t.Errorf("NewPoller(%+v) = %v, want ErrNeedsRealTime", cfg, err)
		}
	}
}
