package vlink

import (
	"bytes"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
)

// The peer personas of serve's --persona on the virtual-time pair: the same
// rules and the same forgetting (services.Persona.Apply) on the virtual
// clock, and slow-reader's pacing (services.ReadPacer) read in virtual time.

// apply starts persona on the pair's peer.
func (e *env) apply(persona string) {
	e.t.Helper()
	pp, err := services.ParsePersona(persona)
	if err != nil {
		e.t.Fatal(err)
	}
	stop, err := pp.Apply(e.p.Peer, e.p.Faults)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(stop)
}

func TestPersonaSilent(t *testing.T) {
	e := newEnv(t, 1)
	e.apply("silent")
	e.establish() // the handshake completes
	e.c.SetUserTimeout(2 * time.Second)
	e.c.Write([]byte(request))
	// The peer reads the request and answers; nothing it sends arrives.
	buf := make([]byte, 100)
	e.p.RunUntil(func() bool {
		if n, _ := e.srv.Read(buf); n > 0 {
			e.srv.Write([]byte("reply"))
		}
		return e.c.Err() != nil
	}, time.Minute)
	mustErrno(t, "client", e.c.Err(), ETIMEDOUT)
	if n, _ := e.c.Read(buf); n != 0 {
		t.Error("the silent peer's reply arrived")
	}
	all(t, "dropped", e.log.where(func(x faultEv) bool { return x.Rule != 0 }), 1, func(x faultEv) bool {
		return x.Dir == packet.Out && x.Flags&fS == 0 && x.Verdict == fault.Dropped
	})
}

// TestPersonaForget: at its moment a rebooting peer answers the old
// connection's next segment with a RST, a half-open one with nothing; new
// connections work with both.
func TestPersonaForget(t *testing.T) {
	tests := []struct {
		persona string
		want    Errno
	}{
		{"reboot:5s", ECONNRESET},
		{"half-open:5s", ETIMEDOUT},
	}
	for _, tt := range tests {
		t.Run(tt.persona, func(t *testing.T) {
			e := newEnv(t, 1)
			e.apply(tt.persona)
			e.establish()
			e.exchange(e.c, e.srv, []byte(request), []byte("ok"), time.Minute)
			e.p.AdvanceTo(6 * time.Second)
			if e.c.Err() != nil || e.c.State() != "ESTABLISHED" {
				t.Fatalf("the client noticed the peer forgetting: %s %v", e.c.State(), e.c.Err())
			}
			if e.srv.Err() == nil {
				t.Error("the peer's end survived")
			}
			e.c.SetUserTimeout(2 * time.Second)
			e.c.Write([]byte(request))
			after, err := e.waitErr(e.c, time.Minute)
			mustErrno(t, "old connection", err, tt.want)
			if tt.want == ECONNRESET && after != 2*dly {
				t.Errorf("reset after %v, want at once (%v)", after, 2*dly)
			}
			if leaked := e.log.where(func(x faultEv) bool { return x.Dir == packet.Out && x.Flags&fR != 0 && x.Verdict == fault.Pass }); len(leaked) != 0 {
				t.Errorf("the forgotten endpoint's RST got out: %v", leaked)
			}
			c, srv := e.connect()
			e.exchange(c, srv, []byte(request), []byte("ok"), time.Minute)
		})
	}
}

// TestPersonaSlowReader reads at 10 kB/s: the peer's window closes, the
// writer blocks, and 100 kB take about 10 s.
func TestPersonaSlowReader(t *testing.T) {
	pp, err := services.ParsePersona("slow-reader:10000")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, 1).establish()
	e.srv.SetReceiveBuffer(16 << 10)
	e.c.SetSendBuffer(16 << 10)
	pacer := services.ReadPacer{Rate: pp.Rate}
	data := bytes.Repeat([]byte("s"), 100<<10)
	rest := data
	var got, blocked int
	buf := make([]byte, 64<<10)
	start := e.p.Now()
	for got < len(data) && e.p.Now()-start < time.Minute {
		n, err := e.c.Write(rest)
		rest = rest[n:]
		if err != nil && len(rest) > 0 {
			blocked++
		}
		k, wait := pacer.Allow(e.p.Now()-start, len(buf))
		if k > 0 {
			n, _ := e.srv.Read(buf[:k])
			pacer.Took(e.p.Now()-start, n)
			got += n
			if n > 0 {
				continue
			}
		}
		// Let time pass: to the reader's next turn, or the next event.
		if wait > 0 {
			e.p.Advance(wait)
		} else if !e.p.Step() {
			e.p.Advance(10 * time.Millisecond)
		}
	}
	if got != len(data) {
		t.Fatalf("read %d of %d bytes in a minute", got, len(data))
	}
	if took := e.p.Now() - start; took < 9*time.Second || took > 11*time.Second {
		t.Errorf("100 kB at 10 kB/s took %v", took)
	}
	if blocked == 0 {
		t.Error("the writer never blocked")
	}
	zero := e.log.where(func(x faultEv) bool { return x.Dir == packet.Out && x.Win == 0 })
	if len(zero) == 0 {
		t.Error("the peer's window never closed")
	}
}
