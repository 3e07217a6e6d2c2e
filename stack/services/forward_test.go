package services

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

func TestParseForward(t *testing.T) {
	tests := []struct {
		in      string
		want    Forward
		wantErr string
	}{
		{in: "80=127.0.0.1:8080", want: Forward{80, "127.0.0.1:8080"}},
		{in: "443=[::1]:8443", want: Forward{443, "[::1]:8443"}},
		{in: "65535=example.com:1", want: Forward{65535, "example.com:1"}},
		{in: "80=x", wantErr: `forward "80=x": target must be HOST:PORT`},
		{in: "80", wantErr: `forward "80": want PORT=HOST:PORT`},
		{in: "", wantErr: `forward "": want PORT=HOST:PORT`},
		{in: "http=a:1", wantErr: `forward "http=a:1": port "http" must be a number from 1 to 65535`},
		{in: "0=a:1", wantErr: `forward "0=a:1": port "0" must be a number from 1 to 65535`},
		{in: "65536=a:1", wantErr: `port "65536" must be a number`},
		{in: "-1=a:1", wantErr: `port "-1" must be a number`},
		{in: "=a:1", wantErr: `port "" must be a number`},
		{in: "80=", wantErr: `forward "80=": target must be HOST:PORT`},
		{in: "80=:8080", wantErr: `forward "80=:8080": target host is empty`},
		{in: "80=a:", wantErr: `forward "80=a:": target port "" must be a number from 1 to 65535`},
		{in: "80=a:http", wantErr: `target port "http" must be a number`},
		{in: "80=a:0", wantErr: `target port "0" must be a number`},
		{in: "80=a:99999", wantErr: `target port "99999" must be a number`},
		{in: "80=::1:80", wantErr: `forward "80=::1:80": target must be HOST:PORT`},
		{in: "80=a:1=b:2", wantErr: `forward "80=a:1=b:2": target must be HOST:PORT`},
		{in: "80=a:1,b", wantErr: `target port "1,b" must be a number`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseForward(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseForward(%q) error = %v, want it to contain %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseForward(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseForward(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if got.String() != tt.in {
				t.Errorf("String() = %q, want the input %q back", got.String(), tt.in)
			}
		})
	}
}

// newUpstream runs a real TCP server on 127.0.0.1 calling handle for each
// connection; cleanup closes it and waits for its goroutines.
func newUpstream(t *testing.T, handle func(net.Conn)) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			// A deadline turns a hang (a bug) into a failure.
			c.SetDeadline(time.Now().Add(30 * time.Second))
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln
}

func TestForwardHalfClose(t *testing.T) {
	// The upstream greets, half-closes, then reads the client's message
	// to EOF and reports it. This needs half-close to pass both ways:
	// the client sees EOF after the greeting while it can still send,
	// and the upstream sees EOF after the message.
	for _, tt := range []struct {
		name string
		addr tcpip.Address
	}{{"v4", peerV4}, {"v6", peerV6}} {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan string, 1)
			up := newUpstream(t, func(c net.Conn) {
				io.WriteString(c, "hello from upstream")
				c.(*net.TCPConn).CloseWrite()
				b, err := io.ReadAll(c)
				if err != nil {
					b = []byte("error: " + err.Error())
				}
				select {
				case got <- string(b):
				default: // a second connection is a bug the test reports anyway
				}
			})
			h := newHarness(t)
			cfg := DefaultConfig()
			cfg.Forwards = []Forward{{Port: 8080, Target: up.Addr().String()}}
			set := h.start(t, cfg)
			c := h.dial(t, tt.addr, 8080)

			greeting, err := io.ReadAll(c)
			if err != nil || string(greeting) != "hello from upstream" {
				t.Fatalf("client read %q, %v; want the greeting then EOF", greeting, err)
			}
			waitFor(t, set, "forward to be tracked", func() bool { return len(set.Conns()) == 1 })
			if ci := set.Conns()[0]; ci.Service != ServiceForward || ci.Target != up.Addr().String() || !strings.HasPrefix(ci.TCP.State, "FIN-WAIT") {
				// The peer passed the upstream's FIN on: its side is
				// half-closed for sending.
				t.Errorf("conn = %+v, want a forward to %s in FIN-WAIT", ci, up.Addr())
			}
			msg := strings.Repeat("after the upstream's FIN ", 4000)
			if _, err := io.WriteString(c, msg); err != nil {
				t.Fatalf("client write after EOF: %v", err)
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatalf("close write: %v", err)
			}
			if s := <-got; s != msg {
				t.Fatalf("upstream got %d bytes (%.40q...), want the client's %d", len(s), s, len(msg))
			}
			waitFor(t, set, "forward to finish", func() bool { return len(set.Conns()) == 0 })
			st := statsOf(t, set, ServiceForward, 8080)
			if st.BytesIn != uint64(len(msg)) || st.BytesOut != uint64(len("hello from upstream")) || st.Accepted != 1 || st.Target != up.Addr().String() {
				t.Errorf("forward stats = %+v, want %d in, %d out", st, len(msg), len("hello from upstream"))
			}
		})
	}
}

func TestForwardRequestResponse(t *testing.T) {
	// The usual direction: the client sends, half-closes, and reads the
	// reply; the upstream answers only after EOF.
	up := newUpstream(t, func(c net.Conn) {
		b, err := io.ReadAll(c)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "got %d bytes", len(b))
	})
	h := newHarness(t)
	set := h.start(t, Config{Forwards: []Forward{{Port: 9000, Target: up.Addr().String()}}})
	c := h.dial(t, peerV6, 9000)
	go func() {
		c.Write(make([]byte, 500000))
		c.CloseWrite()
	}()
	reply, err := io.ReadAll(c)
	if err != nil || string(reply) != "got 500000 bytes" {
		t.Fatalf("reply = %q, %v; want \"got 500000 bytes\" then EOF", reply, err)
	}
	waitFor(t, set, "forward to finish", func() bool { return len(set.Conns()) == 0 })
}

func TestForwardUpstreamReset(t *testing.T) {
	up := newUpstream(t, func(c net.Conn) {
		io.ReadFull(c, make([]byte, 1))
		c.(*net.TCPConn).SetLinger(0) // close → RST
	})
	h := newHarness(t)
	set := h.start(t, Config{Forwards: []Forward{{Port: 9000, Target: up.Addr().String()}}})
	c := h.dial(t, peerV4, 9000)
	c.Write([]byte("x"))
	_, err := io.ReadAll(c)
	if err == nil || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("client read after upstream reset: %v, want connection reset", err)
	}
	waitFor(t, set, "forward to finish", func() bool { return len(set.Conns()) == 0 })
}

func TestForwardDialError(t *testing.T) {
	h := newHarness(t)
	var (
		mu   sync.Mutex
		logs []string
	)
	dialed := make(chan string, 1)
	release := make(chan struct{})
	set := h.start(t, Config{
		Forwards: []Forward{{Port: 9000, Target: "unreachable.test:9"}},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialed <- network + " " + addr
			// Fail only once the client has seen its connect succeed,
			// so the reset arrives on an established connection.
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil, errors.New("connection refused")
		},
		Logf: func(format string, args ...any) {
			mu.Lock()
			logs = append(logs, fmt.Sprintf(format, args...))
			mu.Unlock()
		},
	})
	c := h.dial(t, peerV4, 9000)
	close(release)
	if got := <-dialed; got != "tcp unreachable.test:9" {
		t.Errorf("dialed %q, want tcp unreachable.test:9", got)
	}
	_, err := io.ReadAll(c)
	if err == nil || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("client read after failed dial: %v, want connection reset", err)
	}
	waitFor(t, set, "forward to finish", func() bool { return len(set.Conns()) == 0 })
	if st := statsOf(t, set, ServiceForward, 9000); st.DialErrors != 1 || st.Accepted != 1 {
		t.Errorf("forward stats = %+v, want 1 accepted and 1 dial error", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(logs) != 1 || !strings.Contains(logs[0], "dial unreachable.test:9") || !strings.Contains(logs[0], "connection refused") {
		t.Errorf("logs = %q, want one line naming the target and the error", logs)
	}
}

func TestForwardRealDialRefused(t *testing.T) {
	// The default dialer against a closed loopback port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	target := ln.Addr().String()
	ln.Close()
	h := newHarness(t)
	set := h.start(t, Config{Forwards: []Forward{{Port: 9000, Target: target}}})
	// The reset may arrive while the client's connect is still finishing.
	c, err := dialPeer(h, peerV4, 9000)
	if err == nil {
		defer c.Close()
		_, err = io.ReadAll(c)
	}
	if err == nil || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("client connection ended with %v, want a reset after the refused dial", err)
	}
	waitFor(t, set, "forward to finish", func() bool { return len(set.Conns()) == 0 })
	if st := statsOf(t, set, ServiceForward, 9000); st.DialErrors != 1 {
		t.Errorf("dial errors = %d, want 1", st.DialErrors)
	}
}

func TestForwardBufferSizes(t *testing.T) {
	// A forward's connections get gVisor's largest buffers (the window a
	// kernel client can fill); a built-in service keeps gVisor's default,
	// which the scenarios' theories are about.
	up := newUpstream(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	h := newHarness(t)
	set := h.start(t, Config{Echo: 7, Forwards: []Forward{{Port: 9000, Target: up.Addr().String()}}})
	h.dial(t, peerV4, 9000)
	h.dial(t, peerV4, 7)
	waitFor(t, set, "both connections accepted", func() bool { return len(set.Conns()) == 2 })
	want := map[string]int64{ServiceForward: tcp.MaxBufferSize, "echo": tcp.DefaultReceiveBufferSize}
	wantSend := map[string]int64{ServiceForward: tcp.MaxBufferSize, "echo": tcp.DefaultSendBufferSize}
	set.mu.Lock()
	defer set.mu.Unlock()
	for c := range set.conns {
		opts := c.ep.SocketOptions()
		if got := opts.GetReceiveBufferSize(); got != want[c.svc.name] {
			t.Errorf("%s: receive buffer %d, want %d", c.svc.name, got, want[c.svc.name])
		}
		if got := opts.GetSendBufferSize(); got != wantSend[c.svc.name] {
			t.Errorf("%s: send buffer %d, want %d", c.svc.name, got, wantSend[c.svc.name])
		}
	}
}
