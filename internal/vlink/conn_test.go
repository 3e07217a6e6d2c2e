package vlink

import (
	"errors"
	"io"
	"net/netip"
	"slices"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/unplug-dev/unplug/internal/packet"
)

// TestConnFates drives each way a connection can end and checks the errno
// and the exact virtual time it took.
func TestConnFates(t *testing.T) {
	const s = time.Second
	tests := []struct {
		name  string
		setup func(t *testing.T, p *Pair) *Conn // returns the client socket to watch; the clock starts then
		want  Errno
		after time.Duration
		check func(t *testing.T, recs []packetRecord, start time.Duration)
	}{
		{
			name: "refused",
			setup: func(t *testing.T, p *Pair) *Conn {
				c, err := p.Dial(PeerAddr4.String(), 81)
				if err != nil {
					t.Fatal(err)
				}
				return c
			},
			want: ECONNREFUSED,
		},
		{
			// gVisor's default of 6 SYN retries, like Linux's
			// tcp_syn_retries: SYNs at 0, 1, 3, 7, 15, 31, 63 s.
			name: "syn-timeout",
			setup: func(t *testing.T, p *Pair) *Conn {
				p.Listen(80)
				p.Faults.AddString("drop flags=syn")
				c, err := p.Dial(PeerAddr4.String(), 80)
				if err != nil {
					t.Fatal(err)
				}
				return c
			},
			want: ETIMEDOUT, after: 127 * s,
			check: func(t *testing.T, recs []packetRecord, start time.Duration) {
				var syns []time.Duration
				for _, r := range recs {
					if r.Flags&packet.FlagSYN != 0 {
						syns = append(syns, r.At-start)
					}
				}
				if want := []time.Duration{0, 1 * s, 3 * s, 7 * s, 15 * s, 31 * s, 63 * s}; !slices.Equal(syns, want) {
					t.Errorf("SYNs at %v, want %v", syns, want)
				}
			},
		},
		{
			// docs/facts.md: keepalive 1/1/3 probes at 1, 2, 3 s and fails
			// about 4 s after the outage started.
			name: "keepalive",
			setup: func(t *testing.T, p *Pair) *Conn {
				c, _ := establish(t, p)
				if err := c.SetKeepalive(s, s, 3); err != nil {
					t.Fatal(err)
				}
				p.Faults.AddString("drop")
				return c
			},
			want: ETIMEDOUT, after: 4 * s,
			check: func(t *testing.T, recs []packetRecord, start time.Duration) {
				var probes []time.Duration
				for _, r := range recs {
					if r.At > start && r.Dir == packet.In { // the handshake was at start

						probes = append(probes, r.At-start)
					}
				}
				if want := []time.Duration{1 * s, 2 * s, 3 * s}; !slices.Equal(probes, want) {
					t.Errorf("keepalive probes at %v, want %v", probes, want)
				}
			},
		},
		{
			// The RTO after the user timeout has passed reports it: with
			// the 1 s initial RTO that is at 4 s.
			name: "user-timeout",
			setup: func(t *testing.T, p *Pair) *Conn {
				c, _ := establish(t, p)
				if err := c.SetUserTimeout(3 * s); err != nil {
					t.Fatal(err)
				}
				p.Faults.AddString("drop")
				c.Write([]byte(request))
				return c
			},
			want: ETIMEDOUT, after: 4 * s,
		},
		{
			// The peer forgets the connection while its RST is lost; the
			// client's next segment after the outage draws a fresh RST.
			name: "half-open",
			setup: func(t *testing.T, p *Pair) *Conn {
				c, srv := establish(t, p)
				id, _ := p.Faults.AddString("drop")
				srv.Abort()
				p.Advance(s)
				if c.Err() != nil || c.State() != "ESTABLISHED" {
					t.Fatalf("client noticed the lost RST: %s, %v", c.State(), c.Err())
				}
				p.Faults.Remove(id)
				c.Write([]byte(request))
				return c
			},
			want: ECONNRESET,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder()
			p := newPair(t, PairOptions{Observer: rec})
			c := tt.setup(t, p)
			start := p.Now()
			if err := p.RunUntil(func() bool { return c.Err() != nil }, time.Hour); err != nil {
				t.Fatalf("connection did not fail: %v (state %s)", err, c.State())
			}
			mustErrno(t, "connection", c.Err(), tt.want)
			if got := p.Now() - start; got != tt.after {
				t.Errorf("%s after %v, want %v", tt.want, got, tt.after)
			}
			if tt.check != nil {
				tt.check(t, rec.records(), start)
			}
		})
	}
}

// TestWriterDuringOutage is the sendbuf-full scenario: with a 3 s user
// timeout a writer fills the send buffer at once, then waits (EAGAIN), then
// gets ETIMEDOUT once and EPIPE ever after, and reads see end-of-file.
func TestWriterDuringOutage(t *testing.T) {
	p := newPair(t, PairOptions{})
	c, _ := establish(t, p)
	if err := c.SetUserTimeout(3 * time.Second); err != nil {
		t.Fatal(err)
	}
	p.Faults.AddString("drop")
	start := p.Now()
	chunk := make([]byte, 16<<10)
	var accepted int
	var errs []Errno
	var timedOutAt time.Duration
	for len(errs) == 0 || errs[len(errs)-1] != EPIPE {
		n, err := c.Write(chunk)
		accepted += n
		switch e := ErrnoOf(err); {
		case err == nil:
			if len(errs) > 0 {
				t.Fatalf("write succeeded after %v", errs)
			}
		case e == EAGAIN:
			if !p.Step() {
				t.Fatal("writer blocked with nothing scheduled")
			}
		default:
			if e == ETIMEDOUT {
				timedOutAt = p.Now() - start
			}
			errs = append(errs, e)
		}
		if p.Now()-start > time.Minute {
			t.Fatal("writer never failed")
		}
	}
	if accepted < 64<<10 {
		t.Errorf("only %d bytes accepted before blocking", accepted)
	}
	if !slices.Equal(errs, []Errno{ETIMEDOUT, EPIPE}) || timedOutAt != 3*time.Second {
		t.Errorf("errors %v, ETIMEDOUT after %v; want [ETIMEDOUT EPIPE] after 3s", errs, timedOutAt)
	}
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read after ETIMEDOUT: %v, want EOF", err)
	}
}

// TestZeroWindow fills a peer that does not read: the client's writes block,
// it probes the closed window without giving up, and writing resumes once
// the peer reads.
func TestZeroWindow(t *testing.T) {
	rec := newRecorder()
	p := newPair(t, PairOptions{Delay: 10 * time.Millisecond, Observer: rec})
	c, srv := establish(t, p)
	srv.SetReceiveBuffer(4096)
	c.SetSendBuffer(64 << 10)
	chunk := make([]byte, 16<<10)
	var sent int
	if err := p.RunUntil(func() bool {
		for {
			n, err := c.Write(chunk)
			sent += n
			if err != nil {
				return errors.Is(err, ErrWouldBlock) && p.InFlight() == 0
			}
		}
	}, time.Minute); err != nil {
		t.Fatalf("send buffer never filled: %v", err)
	}
	before := len(rec.dataIn())
	p.Advance(time.Minute)
	probes := len(rec.dataIn()) - before
	if probes < 3 || c.Err() != nil || c.State() != "ESTABLISHED" {
		t.Fatalf("after a minute of zero window: %d probes, %s, %v", probes, c.State(), c.Err())
	}

	buf := make([]byte, 64<<10)
	var got int
	if err := p.RunUntil(func() bool {
		got += len(readSome(srv, buf))
		n, _ := c.Write(chunk)
		return n > 0
	}, time.Minute); err != nil {
		t.Fatalf("writer stuck after the peer read %d bytes: %v", got, err)
	}
	t.Logf("%d bytes accepted, %d window probes in a minute, peer read %d", sent, probes, got)
	if got == 0 || got > sent {
		t.Errorf("peer read %d of %d bytes sent", got, sent)
	}
}

// TestIPv6 runs an exchange over the IPv6 addresses.
func TestIPv6(t *testing.T) {
	p := newPair(t, PairOptions{Delay: time.Millisecond})
	l, err := p.Listen(7)
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Connect(PeerAddr6.String(), 7, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var srv *Conn
	if err := p.RunUntil(func() bool { srv, err = l.Accept(); return err == nil }, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, want := c.LocalAddr(), netip.AddrPortFrom(ClientAddr6, firstClientPort); got != want {
		t.Errorf("client address %v, want %v", got, want)
	}
	if got, want := srv.RemoteAddr(), c.LocalAddr(); got != want {
		t.Errorf("peer sees %v, want %v", got, want)
	}
	m := newPump(c, srv, []byte("ping"), []byte("pong"))
	if err := p.RunUntil(m.step, time.Minute); err != nil || string(m.got) != "pong" {
		t.Fatalf("exchange: %q, %v", m.got, err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := p.RunUntil(func() bool { _, err := srv.Read(make([]byte, 8)); return err == io.EOF }, time.Minute); err != nil {
		t.Errorf("peer never saw the FIN: %v", err)
	}
}

// TestSocketErrors checks the errors of misused sockets.
func TestSocketErrors(t *testing.T) {
	p := newPair(t, PairOptions{})
	if _, err := p.Dial("198.18.0.300", 80); err == nil {
		t.Error("dial to a malformed address succeeded")
	}
	l, err := p.Listen(80)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Listen(80); !errors.Is(err, EADDRINUSE) {
		t.Errorf("second listen on port 80: %v, want EADDRINUSE", err)
	}
	if _, err := l.Accept(); !errors.Is(err, ErrWouldBlock) {
		t.Errorf("accept with nothing pending: %v, want EAGAIN", err)
	}
	c, err := p.Dial(PeerAddr4.String(), 80)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, ErrWouldBlock) {
		t.Errorf("read while connecting: %v, want EAGAIN", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, ErrWouldBlock) {
		t.Errorf("write while connecting: %v, want EAGAIN", err)
	}
	if c.Err() != nil || c.Established() {
		t.Errorf("connecting socket: err %v, established %v", c.Err(), c.Established())
	}
	p.Settle()
	if !c.Established() || c.State() != "ESTABLISHED" {
		t.Errorf("after Settle: %s", c.State())
	}
}

func TestErrno(t *testing.T) {
	err := opError("write", &tcpip.ErrTimeout{})
	if !errors.Is(err, ETIMEDOUT) || ErrnoOf(err) != ETIMEDOUT || errors.Is(err, ECONNRESET) {
		t.Errorf("%v does not match ETIMEDOUT alone", err)
	}
	if got, want := err.Error(), "write: ETIMEDOUT (operation timed out)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	wrapped := errors.Join(errors.New("context"), opError("read", &tcpip.ErrConnectionReset{}))
	if ErrnoOf(wrapped) != ECONNRESET || ErrnoOf(io.EOF) != "" || ErrnoOf(nil) != "" {
		t.Error("ErrnoOf does not follow the error chain")
	}
	if ErrnoOf(opError("x", &tcpip.ErrBadBuffer{})) != EIO {
		t.Error("unmapped errors must be EIO")
	}
	if EAGAIN.Error() != "EAGAIN" || !errors.Is(opError("read", &tcpip.ErrWouldBlock{}), ErrWouldBlock) {
		t.Error("ErrWouldBlock must be EAGAIN")
	}
}
