package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Environment of the child process that TestMain turns into a control
// client, used to connect as another uid.
const (
	childPathEnv = "UNPLUG_CONTROL_TEST_CHILD_PATH"
	childOpEnv   = "UNPLUG_CONTROL_TEST_CHILD_OP"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(childPathEnv); path != "" {
		os.Exit(runChildClient(path, os.Getenv(childOpEnv)))
	}
	goleak.VerifyTestMain(m)
}

// runChildClient makes one Call and prints "ok" or the error to stdout.
func runChildClient(path, op string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Call(ctx, path, op, nil, nil); err != nil {
		fmt.Print(err.Error())
		return 3
	}
	fmt.Print("ok")
	return 0
}

// sockPath returns a fresh socket path in a test-owned directory.
func sockPath(t *testing.T) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "control.sock")
}

// testHandlers are the operations most tests register.
func testHandlers() map[string]HandlerFunc {
	return map[string]HandlerFunc{
		"echo": func(_ context.Context, args []string) (any, error) { return args, nil },
		"sum": func(_ context.Context, args []string) (any, error) {
			total := 0
			for _, a := range args {
				n, err := strconv.Atoi(a)
				if err != nil {
					return nil, fmt.Errorf("sum: %q is not a number", a)
				}
				total += n
			}
			return struct {
				Sum int `json:"sum"`
			}{total}, nil
		},
		"fail": func(_ context.Context, args []string) (any, error) {
			return nil, errors.New(strings.Join(args, "\n"))
		},
		"none":        func(context.Context, []string) (any, error) { return nil, nil },
		"unencodable": func(context.Context, []string) (any, error) { return func() {}, nil },
	}
}

// newServer returns a server with handlers registered, listening on path.
func newServer(t *testing.T, path string, handlers map[string]HandlerFunc) *Server {
	t.Helper()
	srv := NewServer()
	for op, h := range handlers {
		srv.Handle(op, h)
	}
	if err := srv.Listen(path); err != nil {
		t.Fatalf("Listen(%s): %v", path, err)
	}
	return srv
}

// serve runs srv.Serve until the test ends, then checks it returned nil.
func serve(t *testing.T, srv *Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve returned %v, want nil", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Serve did not return after its context was cancelled")
		}
	})
}

// startServer listens on a fresh path and serves testHandlers plus extra.
func startServer(t *testing.T, extra map[string]HandlerFunc) (*Server, string) {
	t.Helper()
	h := testHandlers()
	for op, f := range extra {
		h[op] = f
	}
	path := sockPath(t)
	srv := newServer(t, path, h)
	serve(t, srv)
	return srv, path
}

// rawExchange writes req on a fresh connection, half-closes if asked, and
// returns everything the server sent before closing.
func rawExchange(t *testing.T, path string, req []byte, halfClose bool) string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if _, err := c.Write(req); err != nil {
		t.Fatalf("write request: %v", err)
	}
	if halfClose {
		if err := c.(*net.UnixConn).CloseWrite(); err != nil {
			t.Fatalf("CloseWrite: %v", err)
		}
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	return string(b)
}

// parseResponse checks that raw is exactly one JSON response line.
func parseResponse(t *testing.T, raw string) Response {
	t.Helper()
	line, ok := strings.CutSuffix(raw, "\n")
	if !ok || strings.Contains(line, "\n") {
		t.Fatalf("response %q is not exactly one line", raw)
	}
	var resp Response
	dec := json.NewDecoder(strings.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&resp); err != nil {
		t.Fatalf("response %q is not a valid Response: %v", raw, err)
	}
	return resp
}

// countingHandler returns a handler that counts its calls.
func countingHandler(n *atomic.Int64) HandlerFunc {
	return func(context.Context, []string) (any, error) {
		n.Add(1)
		return nil, nil
	}
}
