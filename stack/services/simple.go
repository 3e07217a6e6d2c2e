package services

import (
	"io"

	"gvisor.dev/gvisor/pkg/waiter"
)

// patternLine is the unit of the byte pattern that source and /bytes/N send:
// 63 printable characters and a newline, so the stream is readable in a
// terminal and a receiver can check every byte's position.
const patternLine = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-\n"

// patternChunk is patternLine repeated; its length is a multiple of the line
// so consecutive writes continue the pattern seamlessly. Read-only.
var patternChunk = func() []byte {
	b := make([]byte, 0, 32<<10)
	for len(b) < cap(b) {
		b = append(b, patternLine...)
	}
	return b
}()

// writePattern writes n bytes of the pattern to w.
func writePattern(w io.Writer, n int64) error {
	for n > 0 {
		k := min(n, int64(len(patternChunk)))
		if _, err := w.Write(patternChunk[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// serveEcho writes back everything it reads; when the client half-closes,
// it finishes echoing and half-closes too.
func (s *Set) serveEcho(c *conn) {
	if _, err := io.Copy(c, c); err == nil {
		c.CloseWrite()
	}
}

// serveDiscard reads and throws away everything until the client closes.
func (s *Set) serveDiscard(c *conn) {
	io.Copy(io.Discard, c)
}

// serveSink accepts and never reads, so the client's send buffer and the
// peer's receive window fill up. It keeps the connection until the Set
// closes or the connection dies (reset or timeout).
func (s *Set) serveSink(c *conn) {
	const dead = waiter.EventHUp | waiter.EventErr
	entry, notify := waiter.NewChannelEntry(dead)
	c.wq.EventRegister(&entry)
	defer c.wq.EventUnregister(&entry)
	if c.ep.Readiness(dead) != 0 {
		return
	}
	select {
	case <-s.done:
	case <-notify:
	}
}

// serveSource writes the pattern until the connection breaks. The peer is
// the sender here, so gVisor's own retransmission timers are what a fault
// exercises.
func (s *Set) serveSource(c *conn) {
	for {
		if _, err := c.Write(patternChunk); err != nil {
			return
		}
	}
}

// Pattern returns n bytes of the pattern the source service writes,
// starting at offset off of the stream.
func Pattern(off int64, n int) []byte {
	out := make([]byte, 0, n)
	i := int(off % int64(len(patternLine)))
	for len(out) < n {
		k := min(n-len(out), len(patternChunk)-i)
		out = append(out, patternChunk[i:i+k]...)
		i = 0
	}
	return out
}
