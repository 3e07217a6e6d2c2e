package vlink

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack/fault"
)

// packetRecord is one fault-layer event with the run-specific values taken
// out: sequence and acknowledgment numbers are relative to each direction's
// first SYN, so two runs of a scenario compare equal.
type packetRecord struct {
	At       time.Duration
	Dir      packet.Direction
	Verdict  fault.Verdict
	Flags    uint8
	Seq, Ack uint32
	Len      int
}

func (r packetRecord) String() string {
	return fmt.Sprintf("%v %v %v flags=%#x seq=%d ack=%d len=%d", r.At, r.Dir, r.Verdict, r.Flags, r.Seq, r.Ack, r.Len)
}

// recorder is a fault.Observer that keeps TCP events as packetRecords.
type recorder struct {
	mu   sync.Mutex
	isn  map[packet.Direction]uint32
	recs []packetRecord
}

func newRecorder() *recorder { return &recorder{isn: map[packet.Direction]uint32{}} }

func (r *recorder) Observe(ev *fault.Event) {
	p := ev.Packet
	if !p.IsTCP() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if p.Flags&packet.FlagSYN != 0 {
		if _, ok := r.isn[p.Dir]; !ok {
			r.isn[p.Dir] = p.Seq
		}
	}
	other := packet.In
	if p.Dir == packet.In {
		other = packet.Out
	}
	rec := packetRecord{
		At: ev.Time.Sub(Epoch), Dir: p.Dir, Verdict: ev.Decision.Verdict, Flags: p.Flags,
		Seq: p.Seq - r.isn[p.Dir], Len: p.PayloadLen,
	}
	if p.Flags&packet.FlagACK != 0 {
		rec.Ack = p.Ack - r.isn[other]
	}
	r.recs = append(r.recs, rec)
}

// records returns a copy of what was seen so far.
func (r *recorder) records() []packetRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]packetRecord(nil), r.recs...)
}

// dataIn returns the client's data segments as the fault layer saw them.
func (r *recorder) dataIn() []packetRecord {
	var out []packetRecord
	for _, rec := range r.records() {
		if rec.Dir == packet.In && rec.Len > 0 {
			out = append(out, rec)
		}
	}
	return out
}

// newPair builds a Pair closed at the end of the test.
func newPair(t testing.TB, opts PairOptions) *Pair {
	t.Helper()
	p, err := NewPair(opts)
	if err != nil {
		t.Fatalf("NewPair: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// establish connects the client to a new peer listener on port 80 and
// returns both ends once the peer has accepted.
func establish(t testing.TB, p *Pair) (client, server *Conn) {
	t.Helper()
	l, err := p.Listen(80)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(l.Close)
	client, err = p.Connect(PeerAddr4.String(), 80, time.Minute)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	if err := p.RunUntil(func() bool {
		server, err = l.Accept()
		return err == nil
	}, time.Minute); err != nil {
		t.Fatalf("accept: %v", err)
	}
	return client, server
}

// pump moves data for a request/response exchange in virtual time: every
// call writes what it can of the client's request, lets the server read it
// and, once the request is complete, write the reply, and reads what the
// client received. It reports whether the client has the whole reply.
type pump struct {
	client, server *Conn
	req, reply     []byte // still to write
	gotReq         int    // bytes of request the server read
	reqLen         int
	got            []byte // reply bytes the client read
	replyLen       int
	buf            []byte
}

func newPump(client, server *Conn, req, reply []byte) *pump {
	return &pump{client: client, server: server, req: req, reply: reply,
		reqLen: len(req), replyLen: len(reply), buf: make([]byte, 64<<10)}
}

func (m *pump) step() bool {
	m.req = m.req[writeSome(m.client, m.req):]
	m.gotReq += len(readSome(m.server, m.buf))
	if m.gotReq == m.reqLen {
		m.reply = m.reply[writeSome(m.server, m.reply):]
	}
	m.got = append(m.got, readSome(m.client, m.buf)...)
	return len(m.got) == m.replyLen
}

func writeSome(c *Conn, b []byte) int {
	done := 0
	for done < len(b) {
		n, err := c.Write(b[done:])
		done += n
		if err != nil || n == 0 {
			break
		}
	}
	return done
}

func readSome(c *Conn, buf []byte) []byte {
	var out []byte
	for {
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil || n == 0 {
			return out
		}
	}
}

// mustErrno fails the test unless err carries want.
func mustErrno(t testing.TB, what string, err error, want Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: error %v, want %s", what, err, want)
	}
}
