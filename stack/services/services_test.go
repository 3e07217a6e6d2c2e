package services

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/refs"
	"gvisor.dev/gvisor/pkg/tcpip"
)

func TestMain(m *testing.M) {
	refs.SetLeakMode(refs.LeaksPanic)
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		refs.DoLeakCheck() // panics on leaked packet buffers or endpoints
		os.Exit(code)
	}))
}

// python404 is the body Python's SimpleHTTPServer sends for a missing file.
const python404 = `<!DOCTYPE HTML>
<html lang="en">
    <head>
        <meta charset="utf-8">
        <title>Error response</title>
    </head>
    <body>
        <h1>Error response</h1>
        <p>Error code: 404</p>
        <p>Message: File not found.</p>
        <p>Error code explanation: 404 - Nothing matches the given URI.</p>
    </body>
</html>
`

// checkPattern fails unless b is the source pattern starting at offset 0.
func checkPattern(t *testing.T, b []byte) {
	t.Helper()
	for i, c := range b {
		if want := patternLine[i%len(patternLine)]; c != want {
			t.Fatalf("byte %d = %q, want %q", i, c, want)
		}
	}
}

func TestHTTP(t *testing.T) {
	h := newHarness(t)
	set := h.start(t, DefaultConfig())

	tests := []struct {
		name       string
		addr       tcpip.Address
		request    string
		method     string
		wantStatus string
		wantLen    int64
		check      func(t *testing.T, body []byte)
	}{
		{
			name:       "404 like SimpleHTTP",
			addr:       peerV4,
			request:    "GET / HTTP/1.1\r\nHost: 198.18.0.2\r\nUser-Agent: test\r\n\r\n",
			wantStatus: "404 File not found",
			wantLen:    int64(len(python404)),
			check: func(t *testing.T, body []byte) {
				if string(body) != python404 {
					t.Errorf("body = %q, want %q", body, python404)
				}
			},
		},
		{
			name:       "404 over IPv6",
			addr:       peerV6,
			request:    "GET /index.html HTTP/1.0\r\n\r\n",
			wantStatus: "404 File not found",
			wantLen:    int64(len(python404)),
		},
		{
			name:       "bare LF head",
			addr:       peerV4,
			request:    "GET /x HTTP/1.0\n\n",
			wantStatus: "404 File not found",
			wantLen:    int64(len(python404)),
		},
		{
			name:       "HEAD has no body",
			addr:       peerV4,
			request:    "HEAD / HTTP/1.0\r\n\r\n",
			method:     "HEAD",
			wantStatus: "404 File not found",
			wantLen:    int64(len(python404)),
			check: func(t *testing.T, body []byte) {
				if len(body) != 0 {
					t.Errorf("HEAD body has %d bytes, want 0", len(body))
				}
			},
		},
		{
			name:       "bytes",
			addr:       peerV4,
			request:    "GET /bytes/1000000 HTTP/1.1\r\nHost: x\r\n\r\n",
			wantStatus: "200 OK",
			wantLen:    1000000,
			check: func(t *testing.T, body []byte) {
				if len(body) != 1000000 {
					t.Fatalf("body has %d bytes, want 1000000", len(body))
				}
				checkPattern(t, body)
			},
		},
		{
			name:       "bytes over IPv6 with query",
			addr:       peerV6,
			request:    "GET /bytes/70000?x=1 HTTP/1.1\r\n\r\n",
			wantStatus: "200 OK",
			wantLen:    70000,
			check:      func(t *testing.T, body []byte) { checkPattern(t, body) },
		},
		{
			name:       "bytes zero",
			addr:       peerV4,
			request:    "GET /bytes/0 HTTP/1.1\r\n\r\n",
			wantStatus: "200 OK",
			wantLen:    0,
		},
		{
			name:       "bytes over limit",
			addr:       peerV4,
			request:    "GET /bytes/1073741825 HTTP/1.1\r\n\r\n",
			wantStatus: "400 Requested 1073741825 bytes; the limit is 1073741824",
			wantLen:    -2, // any length
		},
		{
			name:       "bytes not a number",
			addr:       peerV4,
			request:    "GET /bytes/-5 HTTP/1.1\r\n\r\n",
			wantStatus: "404 File not found",
			wantLen:    int64(len(python404)),
		},
		{
			name:       "unsupported method",
			addr:       peerV4,
			request:    "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
			wantStatus: `501 Unsupported method ("POST")`,
			wantLen:    -2,
			check: func(t *testing.T, body []byte) {
				if !bytes.Contains(body, []byte("Error code: 501")) {
					t.Errorf("body = %q, want an HTML error page for 501", body)
				}
			},
		},
		{
			name:       "garbage request line",
			addr:       peerV4,
			request:    "hello\r\n\r\n",
			wantStatus: `400 Bad request syntax ("hello")`,
			wantLen:    -2,
		},
		{
			name:       "head too large",
			addr:       peerV4,
			request:    "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", maxRequestHead) + "\r\n\r\n",
			wantStatus: "431 Request Header Fields Too Large",
			wantLen:    -2,
		},
		{
			name:       "half-close without blank line",
			addr:       peerV4,
			request:    "GET / HTTP/1.0\r\n",
			wantStatus: "404 File not found",
			wantLen:    int64(len(python404)),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := h.dial(t, tt.addr, DefaultHTTPPort)
			if _, err := io.WriteString(c, tt.request); err != nil {
				t.Fatalf("write request: %v", err)
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatalf("close write: %v", err)
			}
			raw, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("read response: %v (got %d bytes)", err, len(raw))
			}
			method := tt.method
			if method == "" {
				method = "GET"
			}
			resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), &http.Request{Method: method})
			if err != nil {
				t.Fatalf("parse response %q: %v", raw[:min(len(raw), 200)], err)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			if resp.Proto != "HTTP/1.0" || resp.Status != tt.wantStatus {
				t.Errorf("status line = %s %s, want HTTP/1.0 %s", resp.Proto, resp.Status, tt.wantStatus)
			}
			if tt.wantLen != -2 && resp.ContentLength != tt.wantLen {
				t.Errorf("Content-Length = %d, want %d", resp.ContentLength, tt.wantLen)
			}
			if method == "GET" && resp.ContentLength != int64(len(body)) {
				t.Errorf("Content-Length %d but body has %d bytes", resp.ContentLength, len(body))
			}
			if got := resp.Header.Get("Server"); got != "unplug" {
				t.Errorf("Server = %q, want unplug", got)
			}
			if got := resp.Header.Get("Connection"); got != "close" {
				t.Errorf("Connection = %q, want close", got)
			}
			if resp.StatusCode != 200 {
				if got := resp.Header.Get("Content-Type"); got != "text/html" {
					t.Errorf("Content-Type = %q, want text/html", got)
				}
			}
			if tt.check != nil {
				tt.check(t, body)
			}
		})
	}
	waitFor(t, set, "all http connections to finish", func() bool {
		return statsOf(t, set, ServiceHTTP, DefaultHTTPPort).Active == 0
	})
	st := statsOf(t, set, ServiceHTTP, DefaultHTTPPort)
	if st.Accepted != uint64(len(tests)) {
		t.Errorf("http accepted %d connections, want %d", st.Accepted, len(tests))
	}
	if st.BytesOut < 1000000+70000 {
		t.Errorf("http bytes out = %d, want at least the two /bytes bodies", st.BytesOut)
	}
}

func TestEcho(t *testing.T) {
	h := newHarness(t)
	set := h.start(t, DefaultConfig())
	for _, tt := range []struct {
		name string
		addr tcpip.Address
		size int
	}{
		{"v4 small", peerV4, 5},
		{"v4 large", peerV4, 300 << 10},
		{"v6 large", peerV6, 300 << 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := h.dial(t, tt.addr, DefaultEchoPort)
			msg := bytes.Repeat([]byte("echo!"), tt.size/5)
			// Write concurrently with reading: echo sends back while it
			// reads, so a large message would otherwise deadlock once
			// both windows are full.
			werr := make(chan error, 1)
			go func() {
				_, err := c.Write(msg)
				if err == nil {
					err = c.CloseWrite()
				}
				werr <- err
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if err := <-werr; err != nil {
				t.Fatalf("write: %v", err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("echoed %d bytes, want the %d written", len(got), len(msg))
			}
		})
	}
	waitFor(t, set, "echo connections to finish", func() bool {
		return statsOf(t, set, ServiceEcho, DefaultEchoPort).Active == 0
	})
	st := statsOf(t, set, ServiceEcho, DefaultEchoPort)
	want := uint64(5 + 2*(300<<10))
	if st.BytesIn != want || st.BytesOut != want || st.Accepted != 3 {
		t.Errorf("echo stats = %+v, want 3 accepted and %d bytes each way", st, want)
	}
}

func TestDiscard(t *testing.T) {
	h := newHarness(t)
	set := h.start(t, DefaultConfig())
	c := h.dial(t, peerV6, DefaultDiscardPort)
	const size = 1 << 20
	if _, err := c.Write(bytes.Repeat([]byte{'d'}, size)); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("close write: %v", err)
	}
	// Discard closes once it has read everything: EOF with no data.
	got, err := io.ReadAll(c)
	if err != nil || len(got) != 0 {
		t.Fatalf("read after close write = %d bytes, %v; want EOF and nothing", len(got), err)
	}
	waitFor(t, set, "discard connection to finish", func() bool {
		return statsOf(t, set, ServiceDiscard, DefaultDiscardPort).Active == 0
	})
	if st := statsOf(t, set, ServiceDiscard, DefaultDiscardPort); st.BytesIn != size || st.BytesOut != 0 {
		t.Errorf("discard stats = %+v, want %d bytes in and none out", st, size)
	}
}

func TestSink(t *testing.T) {
	h := newHarness(t)
	set := h.start(t, DefaultConfig())
	c := h.dial(t, peerV4, DefaultSinkPort)
	chunk := make([]byte, 64<<10)
	var written int
	var err error
	// Each write gets a short deadline; with a reading server every write
	// completes, with the sink the windows fill and one write times out.
	for written < 256<<20 {
		c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		var n int
		n, err = c.Write(chunk)
		written += n
		if err != nil {
			break
		}
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("after %d bytes the write error is %v; want a timeout once the sink's window is full", written, err)
	}
	if written == 0 {
		t.Errorf("no bytes accepted before blocking; want at least a window's worth")
	}
	st := statsOf(t, set, ServiceSink, DefaultSinkPort)
	if st.BytesIn != 0 || st.Active != 1 {
		t.Errorf("sink stats = %+v, want 1 active connection and 0 bytes read", st)
	}
	conns := set.Conns()
	if len(conns) != 1 || conns[0].Service != ServiceSink || conns[0].TCP.State != "ESTABLISHED" {
		t.Errorf("conns = %+v, want one ESTABLISHED sink connection", conns)
	}
}

func TestSinkReleasesResetConn(t *testing.T) {
	h := newHarness(t)
	set := h.start(t, DefaultConfig())
	c := h.dial(t, peerV4, DefaultSinkPort)
	waitFor(t, set, "sink to accept", func() bool { return statsOf(t, set, ServiceSink, DefaultSinkPort).Active == 1 })
	// An RST from the client (close with linger 0) ends the sink's wait.
	c.reset()
	waitFor(t, set, "sink to drop the reset connection", func() bool {
		return statsOf(t, set, ServiceSink, DefaultSinkPort).Active == 0
	})
}

func TestSource(t *testing.T) {
	for _, tt := range []struct {
		name string
		addr tcpip.Address
	}{{"v4", peerV4}, {"v6", peerV6}} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			set := h.start(t, DefaultConfig())
			c := h.dial(t, tt.addr, DefaultSourcePort)
			const size = 2 << 20
			buf := make([]byte, size)
			if _, err := io.ReadFull(c, buf); err != nil {
				t.Fatalf("read: %v", err)
			}
			checkPattern(t, buf)
			if st := statsOf(t, set, ServiceSource, DefaultSourcePort); st.BytesOut < size {
				t.Errorf("source bytes out = %d, want at least %d", st.BytesOut, size)
			}
			// Closing with unread data resets; the source's write fails.
			c.Close()
			waitFor(t, set, "source to stop writing", func() bool {
				return statsOf(t, set, ServiceSource, DefaultSourcePort).Active == 0
			})
		})
	}
}

func TestConns(t *testing.T) {
	h := newHarness(t)
	set := h.start(t, DefaultConfig())
	src := h.dial(t, peerV4, DefaultSourcePort)
	if _, err := io.ReadFull(src, make([]byte, 1<<20)); err != nil {
		t.Fatalf("read source: %v", err)
	}
	h.dial(t, peerV6, DefaultEchoPort)
	waitFor(t, set, "two connections", func() bool { return len(set.Conns()) == 2 })

	conns := set.Conns()
	s, e := conns[0], conns[1]
	if s.Service != ServiceSource || e.Service != ServiceEcho {
		t.Fatalf("services = %s, %s; want source then echo (oldest first)", s.Service, e.Service)
	}
	if s.Local.String() != "198.18.0.2:5002" || s.Remote.Addr().String() != "198.18.0.1" || s.Remote.Port() == 0 {
		t.Errorf("source addrs = %s <- %s, want 198.18.0.2:5002 <- 198.18.0.1:ephemeral", s.Local, s.Remote)
	}
	if e.Local.String() != "[fd00:198:18::2]:7" || e.Remote.Addr().String() != "fd00:198:18::1" {
		t.Errorf("echo addrs = %s <- %s, want [fd00:198:18::2]:7 <- fd00:198:18::1", e.Local, e.Remote)
	}
	if s.TCP.State != "ESTABLISHED" || s.TCP.RTO <= 0 || s.TCP.SndCwnd == 0 || s.TCP.SegmentsSent == 0 || s.TCP.CongestionState == "unknown" {
		t.Errorf("source TCP info = %+v, want ESTABLISHED with RTO, cwnd and segments", s.TCP)
	}
	if s.BytesOut < 1<<20 {
		t.Errorf("source conn bytes out = %d, want >= 1 MiB", s.BytesOut)
	}
	if s.Started.IsZero() {
		t.Errorf("source conn has no start time")
	}
	b, err := json.Marshal(conns)
	if err != nil {
		t.Fatalf("marshal conns: %v", err)
	}
	for _, key := range []string{`"service":"source"`, `"local":"198.18.0.2:5002"`, `"state":"ESTABLISHED"`, `"rto_ns":`, `"snd_cwnd":`, `"retransmits":`} {
		if !bytes.Contains(b, []byte(key)) {
			t.Errorf("conns JSON lacks %s: %s", key, b)
		}
	}
}

func TestStatsJSON(t *testing.T) {
	h := newHarness(t)
	set := h.start(t, DefaultConfig())
	var names []string
	for _, st := range set.Stats() {
		names = append(names, st.Service)
		if len(st.Addrs) != 2 {
			t.Errorf("%s listens on %v, want both addresses", st.Service, st.Addrs)
		}
	}
	if got := strings.Join(names, ","); got != "http,echo,discard,sink,source" {
		t.Errorf("services = %s, want http,echo,discard,sink,source", got)
	}
	b, err := json.Marshal(set.Stats())
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	for _, key := range []string{`"service":"http"`, `"port":80`, `"addrs":["198.18.0.2:80","[fd00:198:18::2]:80"]`, `"accepted":0`, `"active":0`, `"bytes_in":0`, `"bytes_out":0`} {
		if !bytes.Contains(b, []byte(key)) {
			t.Errorf("stats JSON lacks %s: %s", key, b)
		}
	}
}

func TestStartErrors(t *testing.T) {
	h := newHarness(t)
	fwd := func(port uint16, target string) []Forward { return []Forward{{Port: port, Target: target}} }
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"http vs forward", func(c *Config) { c.Forwards = fwd(80, "127.0.0.1:8080") },
			"port 80 is used by both http and forward; give one of them another port"},
		{"echo vs discard", func(c *Config) { c.Discard = 7 },
			"port 7 is used by both echo and discard; give one of them another port"},
		{"two forwards", func(c *Config) {
			c.HTTP = 0
			c.Forwards = []Forward{{80, "a:1"}, {80, "b:2"}}
		}, "port 80 is used by two forwards (to a:1 and b:2)"},
		{"port out of range", func(c *Config) { c.Sink = 70000 },
			"sink port 70000 is out of range; use 1-65535, or 0 to disable the service"},
		{"negative port", func(c *Config) { c.Echo = -1 }, "echo port -1 is out of range"},
		{"forward port zero", func(c *Config) { c.Forwards = fwd(0, "a:1") }, "port must be from 1 to 65535"},
		{"forward bad target", func(c *Config) { c.Forwards = fwd(81, "x") }, `forward "81=x": target must be HOST:PORT`},
		{"no addresses", func(c *Config) { c.Addrs = []tcpip.Address{} }, "no listen addresses"},
		{"address not on NIC", func(c *Config) {
			c.Addrs = []tcpip.Address{peerV4, tcpip.AddrFrom4([4]byte{198, 18, 0, 9})}
		}, "listen http on 198.18.0.9:80: address is not assigned to NIC 1"},
		{"bad address length", func(c *Config) { c.Addrs = []tcpip.Address{tcpip.AddrFromSlice([]byte{1, 2})} },
			"is neither IPv4 nor IPv6"},
		// A failure after some listeners are up (source is last) must
		// close them all; the final Start below proves the ports are free.
		{"late failure", func(c *Config) {
			c.Addrs = []tcpip.Address{peerV4, peerV6, tcpip.AddrFrom16([16]byte{0xfd, 15: 9})}
		}, "listen http on [fd00::9]:80: address is not assigned to NIC 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.mod(&cfg)
			set, err := Start(context.Background(), h.peer, harnessNIC, cfg)
			if err == nil {
				set.Close()
				t.Fatalf("Start succeeded, want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error = %q, want one line containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "--") {
				t.Errorf("error = %q names a command-line flag; the library speaks Config, cmd/unplug adds flags", err)
			}
		})
	}

	t.Run("port taken on the stack", func(t *testing.T) {
		first := h.start(t, Config{Echo: 7})
		_, err := Start(context.Background(), h.peer, harnessNIC, Config{HTTP: 80, Echo: 7, Addrs: []tcpip.Address{peerV4}})
		if err == nil || !strings.Contains(err.Error(), "listen echo on 198.18.0.2:7: ") {
			t.Fatalf("error = %v, want listen echo on 198.18.0.2:7 failing", err)
		}
		first.Close()
		// http on 80 was opened before echo failed: it must be free again.
		again, err := Start(context.Background(), h.peer, harnessNIC, Config{HTTP: 80, Echo: 7, Addrs: []tcpip.Address{peerV4}})
		if err != nil {
			t.Fatalf("restart after failure: %v", err)
		}
		again.Close()
	})

	t.Run("cancelled context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := Start(ctx, h.peer, harnessNIC, DefaultConfig()); !errors.Is(err, context.Canceled) {
			t.Fatalf("error = %v, want context.Canceled", err)
		}
	})

	// Nothing from the failed starts is still listening.
	set := h.start(t, DefaultConfig())
	c := h.dial(t, peerV6, DefaultEchoPort)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatalf("write: %v", err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("echo after failed starts: %v", err)
	}
	if st := statsOf(t, set, ServiceEcho, DefaultEchoPort); st.Accepted != 1 {
		t.Errorf("echo accepted %d, want 1", st.Accepted)
	}
}

func TestCloseResetsActiveConns(t *testing.T) {
	h := newHarness(t)
	up := newUpstream(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	before := goleak.IgnoreCurrent()
	cfg := DefaultConfig()
	cfg.Forwards = []Forward{{Port: 8080, Target: up.Addr().String()}}
	set, err := Start(context.Background(), h.peer, harnessNIC, cfg)
	if err != nil {
		t.Fatalf("start: %v", err)
	}

	ports := []uint16{DefaultHTTPPort, DefaultEchoPort, DefaultDiscardPort, DefaultSinkPort, DefaultSourcePort, 8080}
	var clients []net.Conn
	for _, p := range ports {
		clients = append(clients, h.dial(t, peerV4, p))
	}
	// Block the sink's client in a write, and the others in reads.
	sink := clients[3]
	sinkDone := make(chan error, 1)
	go func() {
		for {
			if _, err := sink.Write(make([]byte, 64<<10)); err != nil {
				sinkDone <- err
				return
			}
		}
	}()
	waitFor(t, set, "one connection per service", func() bool { return len(set.Conns()) == len(ports) })

	if err := set.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if n := len(set.Conns()); n != 0 {
		t.Errorf("%d connections left after Close", n)
	}
	for _, st := range set.Stats() {
		if st.Active != 0 || st.Accepted != 1 {
			t.Errorf("%s after close: %+v, want 1 accepted and 0 active", st.Service, st)
		}
	}
	// Every client sees its connection end: reset, not a clean EOF.
	for i, c := range clients {
		if i == 3 {
			if err := <-sinkDone; err == nil {
				t.Errorf("sink client write succeeded after Close")
			}
			continue
		}
		_, err := io.Copy(io.Discard, c)
		if err == nil || !strings.Contains(err.Error(), "reset") {
			t.Errorf("port %d: client read ended with %v, want connection reset", ports[i], err)
		}
	}
	// Listeners are gone: a new connection is refused.
	if c, err := dialPeer(h, peerV4, DefaultEchoPort); err == nil {
		c.Close()
		t.Errorf("dial after Close succeeded")
	}
	if err := set.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	goleak.VerifyNone(t, before)
}

// TestContextBoundsOnlyStart: a cancelled context starts nothing, and the
// context of a Start that succeeded does not end the Set: Close does.
func TestContextBoundsOnlyStart(t *testing.T) {
	h := newHarness(t)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if set, err := Start(cancelled, h.peer, harnessNIC, DefaultConfig()); !errors.Is(err, context.Canceled) {
		if set != nil {
			set.Close()
		}
		t.Fatalf("Start with a cancelled context = %v, want context.Canceled", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	set, err := Start(ctx, h.peer, harnessNIC, DefaultConfig())
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	c := h.dial(t, peerV4, DefaultSinkPort)
	waitFor(t, set, "sink to accept", func() bool { return len(set.Conns()) == 1 })
	cancel()
	c2 := h.dial(t, peerV4, DefaultSinkPort)
	waitFor(t, set, "a second sink connection after cancel", func() bool { return len(set.Conns()) == 2 })
	set.Close()
	for _, c := range []net.Conn{c, c2} {
		if _, err := io.Copy(io.Discard, c); err == nil {
			t.Errorf("client read after Close ended cleanly, want reset")
		}
	}
}
