package unplug_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/unplug-dev/unplug"
)

// client returns an HTTP client that dials the peer.
func client(p *unplug.Peer) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: p.DialContext, DisableKeepAlives: true}}
}

func get(t *testing.T, p *unplug.Peer, path string) (status int, body string) {
	t.Helper()
	resp, err := client(p).Get("http://" + p.Addr(80) + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// TestHTTP: net/http, unchanged, talks to the peer on both clocks.
func TestHTTP(t *testing.T) {
	for _, clock := range []unplug.Clock{unplug.Virtual, unplug.Real} {
		t.Run(clock.String(), func(t *testing.T) {
			p := unplug.New(t, unplug.Options{Clock: clock})
			if status, _ := get(t, p, "/"); status != http.StatusNotFound {
				t.Errorf("GET / = %d, want 404", status)
			}
			status, body := get(t, p, "/bytes/100000")
			if status != http.StatusOK || len(body) != 100000 {
				t.Errorf("GET /bytes/100000 = %d with %d bytes, want 200 with 100000", status, len(body))
			}
		})
	}
}

// TestOutageRecovers: a request sent into a 3 s outage is answered after
// it, on the first retransmission past the outage (FACTS.md: recovery can
// lag the outage by up to one RTO).
func TestOutageRecovers(t *testing.T) {
	for _, clock := range []unplug.Clock{unplug.Virtual, unplug.Real} {
		t.Run(clock.String(), func(t *testing.T) {
			p := unplug.New(t, unplug.Options{Clock: clock, Delay: 10 * time.Millisecond})
			c, err := p.DialContext(context.Background(), "tcp", p.Addr(7))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			p.AddFault("drop for=3s")
			start := p.Now()
			if _, err := c.Write([]byte("ping\n")); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || line != "ping\n" {
				t.Fatalf("echo = %q, %v; want ping back", line, err)
			}
			took := p.Now() - start
			t.Logf("%v clock: echo %v after the send into a 3 s outage", clock, took)
			if took < 3*time.Second || took > 10*time.Second {
				t.Errorf("the echo came %v after the send, want after the 3 s outage and within a few RTOs", took)
			}
			if rules := p.Faults(); len(rules) != 1 || rules[0].Dropped == 0 {
				t.Errorf("rules %+v: want one rule that dropped packets", rules)
			}
		})
	}
}

// TestVirtualTimeout: with every packet dropped, gVisor's client gives up
// after its 15 retransmissions, at about 1088 s of virtual time without
// link delay (FACTS.md), with ETIMEDOUT as a kernel socket reports it.
func TestVirtualTimeout(t *testing.T) {
	p := unplug.New(t, unplug.Options{})
	c, err := p.DialContext(context.Background(), "tcp", p.Addr(7))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p.AddFault("drop")
	if _, err := c.Write([]byte("lost")); err != nil {
		t.Fatal(err)
	}
	_, err = c.Read(make([]byte, 10))
	if !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("read = %v, want ETIMEDOUT", err)
	}
	now := p.Now()
	t.Logf("ETIMEDOUT at %v of virtual time: %v", now, err)
	if now < 1000*time.Second || now > 1200*time.Second {
		t.Errorf("ETIMEDOUT at %v of virtual time, want ≈ 1088 s", now)
	}
}

// TestVirtualDeadline: a read deadline passes in virtual time, with a
// net.Error that says so.
func TestVirtualDeadline(t *testing.T) {
	p := unplug.New(t, unplug.Options{})
	c, err := p.DialContext(context.Background(), "tcp", p.Addr(7))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := p.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read = %v, want a timeout", err)
	}
	if took := p.Now() - start; took < 4*time.Second || took > 5*time.Second {
		t.Errorf("the deadline passed after %v of virtual time, want about 5 s", took)
	}
}

// TestVirtualSleep: faults scheduled with after= and for= run on the
// peer's clock, which Sleep moves.
func TestVirtualSleep(t *testing.T) {
	p := unplug.New(t, unplug.Options{Faults: []string{"drop after=10s for=5s"}})
	p.Sleep(12 * time.Second)
	if now := p.Now(); now != 12*time.Second {
		t.Fatalf("Now after Sleep(12s) = %v", now)
	}
	if rules := p.Faults(); len(rules) != 1 || rules[0].State != "active" {
		t.Fatalf("rules %+v at 12 s, want the drop rule active", rules)
	}
}

func TestDialErrors(t *testing.T) {
	p := unplug.New(t, unplug.Options{})
	tests := []struct{ network, addr, want string }{
		{"udp", p.Addr(7), "serves tcp"},
		{"tcp", "127.0.0.1:80", "not the peer's address"},
		{"tcp", "localhost", "not the peer's address"},
	}
	for _, tt := range tests {
		if _, err := p.DialContext(context.Background(), tt.network, tt.addr); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("DialContext(%s, %s) = %v, want an error containing %q", tt.network, tt.addr, err, tt.want)
		}
	}
	// Nobody listens on port 1: the peer answers the SYN with a RST.
	if _, err := p.DialContext(context.Background(), "tcp", p.Addr(1)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial a closed port = %v, want ECONNREFUSED", err)
	}
}

// TestVirtualConcurrentClients: many goroutines share the virtual peer
// (net/http's transport runs a reader and a writer goroutine per
// connection, and keeps connections alive between requests) through 10 %
// loss; every request gets its whole answer.
func TestVirtualConcurrentClients(t *testing.T) {
	p := unplug.New(t, unplug.Options{Delay: 5 * time.Millisecond, Faults: []string{"loss 10%"}})
	c := &http.Client{Transport: &http.Transport{DialContext: p.DialContext, MaxIdleConnsPerHost: 4}}
	const workers, each = 8, 5
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		go func() {
			for i := 0; i < each; i++ {
				resp, err := c.Get("http://" + p.Addr(80) + "/bytes/20000")
				if err != nil {
					errs <- err
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil && len(b) != 20000 {
					err = errors.New("short body")
				}
				errs <- err
			}
		}()
	}
	for i := 0; i < workers*each; i++ {
		if err := <-errs; err != nil {
			t.Errorf("request: %v", err)
		}
	}
	if rules := p.Faults(); rules[0].Dropped == 0 {
		t.Errorf("the loss rule dropped nothing: %+v", rules[0])
	}
	t.Logf("%d requests through 10%% loss took %v of virtual time", workers*each, p.Now())
}
