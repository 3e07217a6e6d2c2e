package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// HandlerFunc runs one control operation. args are the request's arguments;
// the result is encoded as JSON into the response's "data" (nil leaves it
// out). A returned error becomes the response's one-line "error". ctx is
// cancelled when the server shuts down.
type HandlerFunc func(ctx context.Context, args []string) (any, error)

// Default per-connection limits. A client must send its whole request within
// readTimeout, so a silent or slow client cannot pin a goroutine; a response
// write must finish within writeTimeout.
const (
	defaultReadTimeout  = 5 * time.Second
	defaultWriteTimeout = 5 * time.Second
)

// Server answers control requests on a unix socket. Create it with
// NewServer, register operations with Handle, then call Listen and Serve.
// Close stops it and removes the socket file.
type Server struct {
	readTimeout  time.Duration
	writeTimeout time.Duration
	// testHookAccepted, if set, is called with each accepted connection
	// once Close can see it; tests use it to await the accept.
	testHookAccepted func(net.Conn)

	mu       sync.Mutex
	handlers map[string]HandlerFunc
	ln       *net.UnixListener
	path     string      // socket path given to Listen
	sock     os.FileInfo // the socket file Listen created, so Close removes only ours
	conns    map[net.Conn]struct{}
	serving  bool
	closed   bool
	cancel   context.CancelFunc // cancels handler contexts; set by Serve

	wg        sync.WaitGroup // connection goroutines
	closeOnce sync.Once
	closeErr  error
}

// NewServer returns a server with no operations registered and no socket.
func NewServer() *Server {
	return &Server{
		readTimeout:  defaultReadTimeout,
		writeTimeout: defaultWriteTimeout,
		handlers:     make(map[string]HandlerFunc),
		conns:        make(map[net.Conn]struct{}),
	}
}

// Handle registers h as the handler for op. It may be called before or while
// serving. Like http.ServeMux it panics on an empty op, a nil handler or a
// duplicate registration, all programming errors.
func (s *Server) Handle(op string, h HandlerFunc) {
	if op == "" {
		panic("control: Handle with empty op")
	}
	if h == nil {
		panic("control: Handle " + op + " with nil handler")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.handlers[op]; dup {
		panic("control: Handle " + op + " registered twice")
	}
	s.handlers[op] = h
}

// Serve accepts connections on the socket opened by Listen and answers one
// request on each, until ctx is done or Close is called; either way the
// server is closed (socket removed, handlers' contexts cancelled, connection
// goroutines joined) when Serve returns, and it returns Close's result (nil
// unless the socket file could not be removed). Any other accept failure
// closes the server and is returned.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return errors.New("serve control socket: server already closed")
	case s.ln == nil:
		s.mu.Unlock()
		return errors.New("serve control socket: Listen was not called")
	case s.serving:
		s.mu.Unlock()
		return errors.New("serve control socket: Serve already running")
	}
	s.serving = true
	ln := s.ln
	connCtx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	s.mu.Unlock()

	stop := context.AfterFunc(ctx, func() { _ = s.Close() })
	defer stop()

	var backoff time.Duration
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if s.isClosed() {
				return s.Close()
			}
			if retryableAccept(err) {
				// Out of file descriptors or memory: wait and retry, as
				// net/http does, rather than giving up the control channel.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				t := time.NewTimer(backoff)
				select {
				case <-t.C:
				case <-connCtx.Done():
					t.Stop()
				}
				continue
			}
			_ = s.Close()
			return fmt.Errorf("accept control connection: %w", err)
		}
		backoff = 0
		// One deadline for the whole request, so a client trickling bytes
		// cannot extend it. Set before track: Close may shorten it.
		_ = c.SetReadDeadline(time.Now().Add(s.readTimeout))
		if !s.track(c) {
			c.Close()
			continue
		}
		if s.testHookAccepted != nil {
			s.testHookAccepted(c)
		}
		go s.handleConn(connCtx, c)
	}
}

// retryableAccept reports whether an accept error is a resource shortage
// that may clear up.
func retryableAccept(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED)
}

// track records an accepted connection so Close can interrupt it. It reports
// false when the server is already closing.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

// untrack forgets and closes a finished connection.
func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close stops accepting, cancels running handlers' contexts, interrupts
// requests still being read (answering "shutting down"), removes the socket file (only if it is still the one Listen
// created) and waits for connection goroutines to finish. It is safe to call
// more than once and concurrently with Serve; later calls return the first
// call's result. A handler must not call Close (it would wait for itself);
// to shut down from a handler, cancel the context passed to Serve.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		if s.cancel != nil {
			s.cancel()
		}
		var errs []error
		if s.ln != nil {
			// Remove the name first so no new client finds a socket that
			// will never answer.
			if err := s.removeSocket(); err != nil {
				errs = append(errs, err)
			}
			if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, fmt.Errorf("close control socket: %w", err))
			}
		}
		// Interrupt requests still being read; their clients, like those
		// whose handlers were just cancelled, get a "shutting down" answer.
		for c := range s.conns {
			_ = c.SetReadDeadline(time.Now())
		}
		s.mu.Unlock()
		s.wg.Wait()
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// removeSocket removes the socket file if it is still the one Listen bound;
// a file someone else has put there since is left alone. Called with s.mu held.
func (s *Server) removeSocket() error {
	fi, err := os.Lstat(s.path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove control socket %s: %w", s.path, err)
	}
	if s.sock == nil || !os.SameFile(fi, s.sock) {
		return nil
	}
	if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove control socket %s: %w", s.path, err)
	}
	return nil
}

// handleConn answers the single request on c.
func (s *Server) handleConn(ctx context.Context, c *net.UnixConn) {
	defer s.wg.Done()
	defer s.untrack(c)
	rw := &deadlineWriter{Conn: c, timeout: s.writeTimeout}
	if err := checkPeer(c); err != nil {
		_ = writeResponse(rw, errorResponse(err))
		return
	}
	_ = s.serveConn(ctx, rw)
}

// deadlineWriter sets a fresh write deadline before each write, so the
// response gets its full write timeout however long the handler ran.
type deadlineWriter struct {
	net.Conn
	timeout time.Duration
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	_ = d.Conn.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.Conn.Write(p)
}

// serveConn reads one request from rw, runs it and writes one response. It
// is the whole protocol, independent of sockets, so the fuzz test can drive
// it with arbitrary bytes.
func (s *Server) serveConn(ctx context.Context, rw io.ReadWriter) error {
	return writeResponse(rw, s.respond(ctx, rw))
}

// respond reads and runs one request, always producing a response.
func (s *Server) respond(ctx context.Context, r io.Reader) Response {
	line, err := readRequest(r)
	if err != nil {
		if s.isClosed() {
			return errorResponse(errShuttingDown)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("timed out after %v waiting for the request; send one JSON object followed by a newline", s.readTimeout)
		}
		return errorResponse(err)
	}
	req, err := decodeRequest(line)
	if err != nil {
		return errorResponse(err)
	}
	h := s.handler(req.Op)
	if h == nil {
		return errorResponse(s.unknownOp(req.Op))
	}
	data, err := h(ctx, req.Args)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			err = fmt.Errorf("%w; %s was interrupted", errShuttingDown, req.Op)
		}
		return errorResponse(err)
	}
	if data == nil {
		return Response{OK: true}
	}
	b, err := json.Marshal(data)
	if err != nil {
		return errorResponse(fmt.Errorf("encode result of %s: %w", req.Op, err))
	}
	return Response{OK: true, Data: b}
}

func (s *Server) handler(op string) HandlerFunc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.handlers[op]
}

// unknownOp names the operations this server does understand, so a client
// built from a different unplug version sees what is available.
func (s *Server) unknownOp(op string) error {
	s.mu.Lock()
	ops := make([]string, 0, len(s.handlers))
	for name := range s.handlers {
		ops = append(ops, name)
	}
	s.mu.Unlock()
	if len(ops) == 0 {
		return fmt.Errorf("unknown operation %s (this unplug serve understands no operations)", op)
	}
	slices.Sort(ops)
	return fmt.Errorf("unknown operation %s (this unplug serve understands: %s)", op, strings.Join(ops, ", "))
}

// errShuttingDown answers requests cut short by Close.
var errShuttingDown = errors.New("unplug serve is shutting down")

// errPeerCredUnsupported is returned by peerUID on systems where the peer's
// credentials cannot be read; the check is then skipped and the socket's
// 0600 mode is the only guard.
var errPeerCredUnsupported = errors.New("peer credentials not supported on this system")

// checkPeer refuses connections from processes other than the server's own
// uid and root.
func checkPeer(c *net.UnixConn) error {
	uid, err := peerUID(c)
	if errors.Is(err, errPeerCredUnsupported) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read client credentials: %w", err)
	}
	return allowUID(uid, os.Geteuid())
}

// allowUID decides whether a client running as peer may control a server
// running as self: the same uid may, and so may root, which can read and
// write the server's files and memory anyway.
func allowUID(peer, self int) error {
	if peer == self || peer == 0 {
		return nil
	}
	return fmt.Errorf("uid %d may not control this unplug serve (it runs as uid %d); run the command as uid %d or root", peer, self, self)
}
