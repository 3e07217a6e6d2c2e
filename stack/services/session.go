package services

import (
	"bytes"
	"io"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/waiter"
)

// A session is one connection's built-in service (http, echo, discard,
// sink, source) as a state machine over a non-blocking endpoint: step does
// everything that can be done now and returns. The two runners drive the
// same sessions: Set gives each connection a goroutine that steps and then
// waits for the endpoint's next event (runSession), and the virtual-time
// driver steps every connection between clock steps through a Poller. So a
// real-time and a virtual-time run are served by the same code.
type session struct {
	name string // service name

	in      []byte // http: request head bytes so far
	out     []byte // queued bytes, sent before the pattern
	pattern int64  // pattern bytes still to send after out; -1 = forever (source)
	sent    int64  // pattern bytes sent so far (the pattern's offset)

	responded bool  // http: the response is queued
	lingering bool  // http: response sent and FIN out; input is read and dropped
	lingered  int64 // http: bytes dropped while lingering
	eof       bool  // the client half-closed
	closed    bool  // done: the runner closes the connection
}

// sessionIO is the endpoint a session works on; every call is
// non-blocking.
type sessionIO interface {
	// read returns what is there: (0, false, nil) means nothing yet, eof
	// the client's FIN, err a connection that is gone.
	read(buf []byte) (n int, eof bool, err tcpip.Error)
	// write sends as much of b as fits now.
	write(b []byte) (int, tcpip.Error)
	// shutdownWrite sends a FIN.
	shutdownWrite()
	// dead reports a connection that was reset or timed out.
	dead() bool
}

func newSession(name string) *session {
	s := &session{name: name}
	if name == ServiceSource {
		s.pattern = -1
	}
	return s
}

// readBufs are the buffers sessions read into: one per step in progress,
// not one per connection, so ten thousand idle connections cost nothing.
var readBufs = sync.Pool{New: func() any { return new([32 << 10]byte) }}

// step moves the session as far as it can go now and reports whether it
// did anything (read, wrote, or finished).
func (s *session) step(c sessionIO) bool {
	switch s.name {
	case ServiceSink:
		// Accepts, never reads: the client's window fills up. It keeps
		// the connection until it dies or the runner stops.
		if c.dead() {
			s.closed = true
			return true
		}
		return false
	case ServiceSource:
		return s.flush(c)
	}
	busy := false
	if !s.eof {
		buf := readBufs.Get().(*[32 << 10]byte)
		busy = s.readAll(c, buf[:])
		readBufs.Put(buf)
		if s.closed {
			return true
		}
	}
	if s.flush(c) {
		busy = true
	}
	if s.closed || len(s.out) > 0 || s.pattern != 0 {
		return busy
	}
	switch {
	case s.name == ServiceHTTP && s.responded && !s.lingering:
		// Closing with unread input would send an RST, which can destroy
		// the response before the client reads it (a request body, the
		// rest of an oversized head). Send the FIN, then read and drop
		// input until the client closes, for a bounded amount (and, in
		// real time, lingerTime), as net/http's lingering close does.
		c.shutdownWrite()
		s.lingering = true
		s.closed = s.eof
		return true
	case s.eof:
		// Echo finishes echoing and half-closes too; discard and http
		// (a client that went away before asking anything) close.
		c.shutdownWrite()
		s.closed = true
		return true
	}
	return busy
}

// readAll reads what is there and feeds it to the service.
func (s *session) readAll(c sessionIO, buf []byte) bool {
	busy := false
	for !s.eof {
		n, eof, err := c.read(buf)
		if err != nil {
			s.closed = true
			return true
		}
		if n > 0 {
			busy = true
			s.took(buf[:n])
		}
		if eof {
			s.eof, busy = true, true
			if s.name == ServiceHTTP && !s.responded && len(bytes.TrimSpace(s.in)) > 0 {
				// A partial head ended by the client's FIN is answered,
				// as Python's server does.
				s.answer(s.in, nil)
			}
		}
		if s.lingering && s.lingered >= lingerBytes {
			s.closed = true
			return true
		}
		if n == 0 && !eof {
			break
		}
	}
	return busy
}

// took handles bytes read from the client.
func (s *session) took(b []byte) {
	switch {
	case s.name == ServiceEcho:
		s.out = append(s.out, b...)
	case s.name == ServiceHTTP && s.lingering:
		s.lingered += int64(len(b))
	case s.name == ServiceHTTP && !s.responded:
		from := max(0, len(s.in)-2) // a terminator may straddle two reads
		s.in = append(s.in, b...)
		if end := headEnd(s.in[from:]); end >= 0 {
			if from+end > maxRequestHead {
				s.answer(nil, errHeadTooLarge)
			} else {
				s.answer(s.in[:from+end], nil)
			}
		} else if len(s.in) > maxRequestHead {
			s.answer(nil, errHeadTooLarge)
		}
	case s.name == ServiceHTTP:
		// Bytes after the head, before the response is out: dropped.
	}
}

// answer queues the http response to head.
func (s *session) answer(head []byte, headErr error) {
	var r plannedResponse
	respond(&r, head, headErr)
	s.out, s.pattern, s.in, s.responded = r.head, r.pattern, nil, true
}

// flush sends queued bytes, then the pattern, as far as they fit.
func (s *session) flush(c sessionIO) bool {
	busy := false
	for len(s.out) > 0 {
		n, err := c.write(s.out)
		s.out = s.out[n:]
		busy = busy || n > 0
		if err != nil {
			s.closed = true
			return true
		}
		if n == 0 {
			return busy
		}
	}
	if len(s.out) == 0 {
		s.out = nil
	}
	for s.pattern != 0 {
		i := int(s.sent % int64(len(patternLine)))
		chunk := patternChunk[i:]
		if s.pattern > 0 && int64(len(chunk)) > s.pattern {
			chunk = chunk[:s.pattern]
		}
		n, err := c.write(chunk)
		s.sent += int64(n)
		if s.pattern > 0 {
			s.pattern -= int64(n)
		}
		busy = busy || n > 0
		if err != nil {
			s.closed = true
			return true
		}
		if n < len(chunk) {
			return busy
		}
	}
	return busy
}

// plannedResponse collects what respond writes: the head (and error page)
// as bytes, a /bytes/N body as a count of pattern bytes to stream.
type plannedResponse struct {
	head    []byte
	pattern int64
}

// Write implements io.Writer.
func (r *plannedResponse) Write(b []byte) (int, error) {
	r.head = append(r.head, b...)
	return len(b), nil
}

// writePattern writes n bytes of the pattern to w; to a plannedResponse it
// only notes the count, so a 1 GiB body is streamed, not built.
func writePattern(w io.Writer, n int64) error {
	if r, ok := w.(*plannedResponse); ok {
		r.pattern += n
		return nil
	}
	for n > 0 {
		k := min(n, int64(len(patternChunk)))
		if _, err := w.Write(patternChunk[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// wants returns the endpoint events that can move the session: input
// while it reads, window space while output waits, and always the end of
// the connection.
func (s *session) wants() waiter.EventMask {
	m := waiter.EventHUp | waiter.EventErr
	if !s.eof && s.name != ServiceSink && s.name != ServiceSource {
		m |= waiter.ReadableEvents
	}
	if len(s.out) > 0 || s.pattern != 0 {
		m |= waiter.WritableEvents
	}
	return m
}

// endpointIO is a sessionIO on a gVisor endpoint, counting bytes into the
// service's counters (and the connection's, when conn is set).
type endpointIO struct {
	ep   tcpip.Endpoint
	svc  *service
	conn *conn // the goroutine runner's connection; nil under a Poller
}

func (e *endpointIO) read(buf []byte) (int, bool, tcpip.Error) {
	var pacer *connPacer
	if e.conn != nil {
		pacer = e.conn.pacer
	}
	if pacer != nil {
		buf = pacer.limit(buf)
	}
	w := tcpip.SliceWriter(buf)
	res, terr := e.ep.Read(&w, tcpip.ReadOptions{})
	if pacer != nil {
		pacer.took(res.Count)
	}
	switch terr.(type) {
	case nil:
		if res.Count > 0 {
			e.ep.ModerateRecvBuf(res.Count)
		}
		e.svc.bytesIn.Add(uint64(res.Count))
		if e.conn != nil {
			e.conn.in.Add(uint64(res.Count))
		}
		return res.Count, false, nil
	case *tcpip.ErrWouldBlock:
		return 0, false, nil
	case *tcpip.ErrClosedForReceive:
		return 0, true, nil
	}
	return 0, false, terr
}

func (e *endpointIO) write(b []byte) (int, tcpip.Error) {
	var r bytes.Reader
	r.Reset(b)
	n, terr := e.ep.Write(&r, tcpip.WriteOptions{})
	e.svc.bytesOut.Add(uint64(n))
	if e.conn != nil {
		e.conn.out.Add(uint64(n))
	}
	if _, ok := terr.(*tcpip.ErrWouldBlock); ok {
		terr = nil
	}
	return int(n), terr
}

func (e *endpointIO) shutdownWrite() { e.ep.Shutdown(tcpip.ShutdownWrite) }

func (e *endpointIO) dead() bool {
	return e.ep.Readiness(waiter.EventHUp|waiter.EventErr) != 0
}
