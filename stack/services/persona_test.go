package services

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"

	"github.com/unplug-dev/unplug/stack/fault"
)

func TestParsePersona(t *testing.T) {
	tests := []struct {
		in   string
		want Persona
		err  string
	}{
		{"silent", Persona{Name: PersonaSilent}, ""},
		{"silent:8080", Persona{Name: PersonaSilent, Port: 8080}, ""},
		{"reboot:30s", Persona{Name: PersonaReboot, At: 30 * time.Second}, ""},
		{"half-open:1m30s", Persona{Name: PersonaHalfOpen, At: 90 * time.Second}, ""},
		{"slow-reader:1000", Persona{Name: PersonaSlowReader, Rate: 1000}, ""},
		{"slow-reader:64KiB", Persona{Name: PersonaSlowReader, Rate: 65536}, ""},
		{"slow-reader:2M", Persona{Name: PersonaSlowReader, Rate: 2e6}, ""},
		{"", Persona{}, "unknown persona"},
		{"chatty", Persona{}, "unknown persona"},
		{"silent:", Persona{}, "port must be 1-65535"},
		{"silent:70000", Persona{}, "port must be 1-65535"},
		{"reboot", Persona{}, "needs the moment"},
		{"reboot:0s", Persona{}, "needs the moment"},
		{"half-open:soon", Persona{}, "needs the moment"},
		{"slow-reader", Persona{}, "needs a read rate"},
		{"slow-reader:0", Persona{}, "needs a read rate"},
		{"slow-reader:1.5k", Persona{}, "needs a read rate"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePersona(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || strings.Contains(err.Error(), "\n") ||
					!strings.Contains(err.Error(), "silent[:PORT]") {
					t.Fatalf("ParsePersona(%q) error %v, want one line with %q and the usage", tt.in, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParsePersona(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			again, err := ParsePersona(got.String())
			if err != nil || again != got {
				t.Fatalf("round trip via %q: %+v, %v", got.String(), again, err)
			}
		})
	}
}

func TestPersonaRules(t *testing.T) {
	silent, _ := ParsePersona("silent:80")
	if r := silent.Rules(); len(r) != 1 || r[0].String() != "drop dir=out port=80 after=established" {
		t.Errorf("silent rules %v", r)
	}
	for _, p := range []string{"reboot:1s", "half-open:1s", "slow-reader:10"} {
		pp, _ := ParsePersona(p)
		if r := pp.Rules(); r != nil {
			t.Errorf("%s installs %v at start", p, r)
		}
	}
	reboot, _ := ParsePersona("reboot:1s")
	var got []string
	for _, sp := range reboot.strikeRules() {
		got = append(got, sp.String())
	}
	if strings.Join(got, "; ") != "drop dir=out flows=existing; reject dir=in flows=existing" {
		t.Errorf("reboot strike rules %v", got)
	}
}

// TestReadPacer checks the pacing arithmetic: bites of a tenth of a second's
// worth, each followed by the time it takes at the rate.
func TestReadPacer(t *testing.T) {
	p := ReadPacer{Rate: 1000}
	if n, wait := p.Allow(0, 4096); n != 100 || wait != 0 {
		t.Fatalf("first Allow = %d, %v", n, wait)
	}
	p.Took(0, 100)
	if n, wait := p.Allow(40*time.Millisecond, 4096); n != 0 || wait != 60*time.Millisecond {
		t.Fatalf("Allow too early = %d, %v", n, wait)
	}
	if n, _ := p.Allow(100*time.Millisecond, 30); n != 30 {
		t.Fatalf("Allow capped by the caller = %d", n)
	}
	// Reading as fast as allowed for 10 s takes 10 kB.
	var now time.Duration
	total := 0
	p = ReadPacer{Rate: 1000}
	for now < 10*time.Second {
		n, wait := p.Allow(now, 1<<20)
		if wait > 0 {
			now += wait
			continue
		}
		p.Took(now, n)
		total += n
	}
	if total < 9900 || total > 10100 {
		t.Errorf("read %d bytes in 10 s at 1000 B/s", total)
	}
	slow := ReadPacer{Rate: 3}
	if n, _ := slow.Allow(0, 10); n != 1 {
		t.Errorf("a rate below 10 B/s reads %d bytes at a time, want 1", n)
	}
}

// TestConnPacerStopsOnClose: a paced read waiting for its turn returns at
// once when the Set closes.
func TestConnPacerStopsOnClose(t *testing.T) {
	done := make(chan struct{})
	c := &connPacer{p: ReadPacer{Rate: 10}, start: time.Now(), done: done}
	if b := c.limit(make([]byte, 100)); len(b) != 1 {
		t.Fatalf("first bite %d bytes, want 1 (a tenth of 10 B/s, at least 1)", len(b))
	}
	c.took(1)
	c.p.next = time.Hour // the next turn is far away
	close(done)
	if b := c.limit(make([]byte, 100)); len(b) != 1 {
		t.Fatalf("after close: %d bytes", len(b))
	}
}

func TestStartPersona(t *testing.T) {
	h := newHarness(t)
	_, err := Start(t.Context(), h.peer, harnessNIC, Config{Discard: 9, Addrs: []tcpip.Address{peerV4}, Persona: Persona{Name: PersonaSilent}})
	if err == nil || !strings.Contains(err.Error(), "needs the peer's fault layer") {
		t.Fatalf("silent persona without a fault layer: %v", err)
	}
	// The listeners of the failed Start are gone: the port is free again.
	ctl := fault.NewController(faketime.NewManualClock(), 1)
	set := h.start(t, Config{Discard: 9, Persona: Persona{Name: PersonaReboot, At: time.Hour}, Faults: ctl})
	if n := len(ctl.Status()); n != 0 {
		t.Errorf("reboot installed %d rules before its moment", n)
	}
	set.Close() // stops the reboot's timer: goleak and the clock would see it otherwise

	slow := h.start(t, Config{Discard: 19, Persona: Persona{Name: PersonaSlowReader, Rate: 1000}})
	c := h.dial(t, peerV4, 19)
	waitFor(t, slow, "the connection", func() bool { return len(slow.Conns()) == 1 })
	slow.mu.Lock()
	for sc := range slow.conns {
		if sc.pacer == nil || sc.pacer.p.Rate != 1000 {
			t.Errorf("connection pacer %+v", sc.pacer)
		}
	}
	slow.mu.Unlock()
	c.Close()
}

// TestForget: Forget aborts the peer's connections (their RSTs reach the
// clients, as nothing stops them here) and leaves the listeners.
func TestForget(t *testing.T) {
	h := newHarness(t)
	set := h.start(t, Config{Echo: 7})
	a, b := h.dial(t, peerV4, 7), h.dial(t, peerV6, 7)
	waitFor(t, set, "two connections", func() bool { return len(set.Conns()) == 2 })
	if n := Forget(h.peer); n != 2 {
		t.Fatalf("Forget aborted %d endpoints, want the 2 connections", n)
	}
	for _, c := range []*clientConn{a, b} {
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, io.EOF) {
			t.Errorf("client read after Forget: %v, want a reset", err)
		}
	}
	c := h.dial(t, peerV4, 7) // still listening
	c.Write([]byte("x"))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("echo after Forget: %v", err)
	}
}
