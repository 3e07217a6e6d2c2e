package services

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
)

// Forward splices connections to Port on the peer to a real host, so an app
// can reach an actual server through unplug's faulty network.
type Forward struct {
	// Port is the peer's listening port.
	Port uint16
	// Target is the real HOST:PORT to dial for each connection.
	Target string
}

// ParseForward parses the --forward flag's PORT=HOST:PORT, e.g.
// "8080=127.0.0.1:8080" or "443=[::1]:8443".
func ParseForward(s string) (Forward, error) {
	portStr, target, ok := strings.Cut(s, "=")
	if !ok {
		return Forward{}, fmt.Errorf("forward %q: want PORT=HOST:PORT, e.g. 8080=127.0.0.1:8080", s)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return Forward{}, fmt.Errorf("forward %q: port %q must be a number from 1 to 65535", s, portStr)
	}
	f := Forward{Port: uint16(port), Target: target}
	if err := f.validateTarget(); err != nil {
		return Forward{}, fmt.Errorf("forward %q: %w", s, err)
	}
	return f, nil
}

// String formats f the way ParseForward reads it.
func (f Forward) String() string {
	return fmt.Sprintf("%d=%s", f.Port, f.Target)
}

// validate checks a Forward built without ParseForward.
func (f Forward) validate() error {
	if f.Port == 0 {
		return fmt.Errorf("forward %q: port must be from 1 to 65535", f)
	}
	if err := f.validateTarget(); err != nil {
		return fmt.Errorf("forward %q: %w", f, err)
	}
	return nil
}

// validateTarget checks that Target is HOST:PORT with a numeric port.
func (f Forward) validateTarget() error {
	host, port, err := net.SplitHostPort(f.Target)
	if err != nil {
		return errors.New("target must be HOST:PORT")
	}
	if host == "" {
		return errors.New("target host is empty; want HOST:PORT")
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("target port %q must be a number from 1 to 65535", port)
	}
	return nil
}

// closeWriter is a connection that can send a FIN while still reading.
type closeWriter interface {
	CloseWrite() error
}

// serveForward dials the forward's target and copies both directions until
// both have ended. An orderly end (EOF) in one direction is passed on as a
// half-close; an error in either direction resets both connections. When the
// target cannot be reached the client's connection is reset.
func (s *Set) serveForward(c *conn) {
	// The dial ends with the Set: Close cancels it.
	ctx, cancel := context.WithCancel(context.Background())
	stop := s.onClose(cancel)
	up, err := s.dial(ctx, "tcp", c.svc.target)
	stop()
	cancel()
	if err != nil {
		c.svc.dialErrors.Add(1)
		if !s.closing() {
			s.logf("forward %d: dial %s for %s: %v; resetting the client", c.svc.port, c.svc.target, c.remote, err)
		}
		c.abort()
		return
	}
	if !c.setUpstream(up) {
		up.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		splice(c, up, c) // target → client
	}()
	splice(up, c, c) // client → target
	wg.Wait()
}

// splice copies src to dst; on EOF it half-closes dst, on error it resets c
// (and with it the upstream) so the other direction stops too.
func splice(dst io.Writer, src io.Reader, c *conn) {
	if _, err := copyForward(dst, src); err != nil {
		c.abort()
		return
	}
	if cw, ok := dst.(closeWriter); ok {
		if err := cw.CloseWrite(); err != nil {
			c.abort()
		}
	}
}
