package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/iotest"
	"time"
)

func TestRoundTrip(t *testing.T) {
	_, path := startServer(t, nil)
	tests := []struct {
		name     string
		op       string
		args     []string
		wantData string // JSON of the response data; "" for none
		wantErr  string // exact server message; "" for success
	}{
		{name: "echo", op: "echo", args: []string{"drop dir=in for=3s", "b c"}, wantData: `["drop dir=in for=3s","b c"]`},
		{name: "echo without args", op: "echo", wantData: `null`},
		{name: "structured result", op: "sum", args: []string{"1", "2", "39"}, wantData: `{"sum":42}`},
		{name: "handler error", op: "sum", args: []string{"1", "x"}, wantErr: `sum: "x" is not a number`},
		{name: "multi-line error becomes one line", op: "fail", args: []string{"line one", "", "  line two  "}, wantErr: "line one; line two"},
		{name: "empty error message", op: "fail", wantErr: "unknown error"},
		{name: "nil result", op: "none"},
		{name: "unencodable result", op: "unencodable", wantErr: "encode result of unencodable: json: unsupported type: func()"},
		{name: "unknown op", op: "nope", wantErr: "unknown operation nope (this unplug serve understands: echo, fail, none, sum, unencodable)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var data json.RawMessage
			err := Call(ctx, path, tt.op, tt.args, &data)
			if tt.wantErr != "" {
				var re *RemoteError
				if !errors.As(err, &re) {
					t.Fatalf("Call error = %v (%T), want *RemoteError", err, err)
				}
				if re.Op != tt.op || re.Message != tt.wantErr || err.Error() != tt.wantErr {
					t.Fatalf("Call error = %+v, want op %q message %q", re, tt.op, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Call: %v", err)
			}
			if string(data) != tt.wantData {
				t.Fatalf("data = %s, want %s", data, tt.wantData)
			}
		})
	}
}

func TestRoundTripNoHandlers(t *testing.T) {
	path := sockPath(t)
	serve(t, newServer(t, path, nil))
	err := Call(context.Background(), path, "status", nil, nil)
	want := "unknown operation status (this unplug serve understands no operations)"
	if err == nil || err.Error() != want {
		t.Fatalf("Call error = %v, want %q", err, want)
	}
}

func TestRawRequests(t *testing.T) {
	_, path := startServer(t, nil)
	tests := []struct {
		name      string
		req       string
		halfClose bool
		wantData  string // when the request succeeds
		wantErr   string // prefix of the error message otherwise
	}{
		{name: "version 1", req: `{"v":1,"op":"echo","args":["a"]}` + "\n", wantData: `["a"]`},
		{name: "no version means 1", req: `{"op":"echo","args":["a"]}` + "\n", wantData: `["a"]`},
		{name: "CRLF", req: `{"op":"echo","args":["a"]}` + "\r\n", wantData: `["a"]`},
		{name: "no newline then half-close", req: `{"op":"echo","args":["a"]}`, halfClose: true, wantData: `["a"]`},
		{name: "only the first line counts", req: `{"op":"echo","args":["1"]}` + "\n" + `{"op":"echo","args":["2"]}` + "\n", wantData: `["1"]`},
		{name: "version mismatch", req: `{"v":2,"op":"echo"}` + "\n", wantErr: "unsupported control protocol version 2 (this unplug serve speaks version 1); use an unplug binary that matches the running server"},
		{name: "malformed JSON", req: `{"op":` + "\n", wantErr: "malformed request: unexpected EOF"},
		{name: "not an object", req: `[1,2]` + "\n", wantErr: "malformed request: json: cannot unmarshal array"},
		{name: "wrong arg type", req: `{"op":"echo","args":[1]}` + "\n", wantErr: "malformed request: json: cannot unmarshal number"},
		{name: "unknown field", req: `{"op":"echo","argz":["a"]}` + "\n", wantErr: `malformed request: json: unknown field "argz"`},
		{name: "trailing data", req: `{"op":"echo"} {"op":"echo"}` + "\n", wantErr: "malformed request: trailing data after the JSON object"},
		{name: "missing op", req: `{"v":1}` + "\n", wantErr: `malformed request: missing "op"`},
		{name: "empty line", req: "\n", wantErr: "empty request"},
		{name: "nothing then half-close", req: "", halfClose: true, wantErr: "empty request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := parseResponse(t, rawExchange(t, path, []byte(tt.req), tt.halfClose))
			if tt.wantErr != "" {
				if resp.OK || !strings.HasPrefix(resp.Error, tt.wantErr) {
					t.Fatalf("response %+v, want error starting %q", resp, tt.wantErr)
				}
				if resp.Data != nil {
					t.Fatalf("error response carries data %s", resp.Data)
				}
				return
			}
			if !resp.OK || resp.Error != "" || string(resp.Data) != tt.wantData {
				t.Fatalf("response %+v (data %s), want ok with data %s", resp, resp.Data, tt.wantData)
			}
		})
	}
}

func TestRequestTooLarge(t *testing.T) {
	_, path := startServer(t, nil)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The server stops reading at the limit, so the write may fail once it
	// closes the connection; write concurrently and ignore that.
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		_, _ = c.Write(bytes.Repeat([]byte("a"), 4*MaxRequestSize))
	}()
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	resp := parseResponse(t, line)
	if resp.OK || !strings.HasPrefix(resp.Error, "request too large") {
		t.Fatalf("response %+v, want request too large", resp)
	}
	// Then the server closes the connection. Linux reports that as a reset
	// because request bytes were left unread.
	if n, err := br.Read(make([]byte, 1)); n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("after the response: read %d bytes, %v; want the connection closed", n, err)
	}
	<-wrote
}

// TestRequestSizeLimit checks the exact boundary on the protocol function.
func TestRequestSizeLimit(t *testing.T) {
	srv := NewServer()
	srv.Handle("echo", testHandlers()["echo"])
	base := `{"op":"echo","args":["x"]}`
	tests := []struct {
		name   string
		size   int // bytes before the newline
		wantOK bool
	}{
		{name: "at limit", size: MaxRequestSize, wantOK: true},
		{name: "one over", size: MaxRequestSize + 1},
		{name: "far over", size: 3 * MaxRequestSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := base + strings.Repeat(" ", tt.size-len(base)) + "\n"
			var out bytes.Buffer
			rw := struct {
				io.Reader
				io.Writer
			}{strings.NewReader(req), &out}
			if err := srv.serveConn(context.Background(), rw); err != nil {
				t.Fatalf("serveConn: %v", err)
			}
			resp := parseResponse(t, out.String())
			if resp.OK != tt.wantOK {
				t.Fatalf("response %+v, want ok=%v", resp, tt.wantOK)
			}
			if !tt.wantOK && !strings.HasPrefix(resp.Error, "request too large") {
				t.Fatalf("error %q, want request too large", resp.Error)
			}
		})
	}
}

func TestReadRequestChunking(t *testing.T) {
	req := `{"op":"echo","args":["` + strings.Repeat("z", 10000) + `"]}`
	tests := []struct {
		name string
		r    io.Reader
	}{
		{name: "one byte at a time", r: iotest.OneByteReader(strings.NewReader(req + "\nrest"))},
		{name: "EOF with last data", r: iotest.DataErrReader(strings.NewReader(req))},
		{name: "half reads", r: iotest.HalfReader(strings.NewReader(req + "\n"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line, err := readRequest(tt.r)
			if err != nil || string(line) != req {
				t.Fatalf("readRequest = %d bytes, %v; want the %d-byte request", len(line), err, len(req))
			}
		})
	}
	_, err := readRequest(iotest.ErrReader(errors.New("boom")))
	if err == nil || err.Error() != "read request: boom" {
		t.Fatalf("readRequest on failing reader: %v", err)
	}
}

func TestSilentClientTimesOut(t *testing.T) {
	srv := newServer(t, sockPath(t), testHandlers())
	srv.readTimeout = 50 * time.Millisecond
	serve(t, srv)
	c, err := net.Dial("unix", srv.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Guard against a hang if the server never times out.
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	// Send part of a request and stall: the deadline covers the whole
	// request, not each read.
	if _, err := c.Write([]byte(`{"op":`)); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	resp := parseResponse(t, string(b))
	want := "timed out after 50ms waiting for the request; send one JSON object followed by a newline"
	if resp.OK || resp.Error != want {
		t.Fatalf("response %+v, want error %q", resp, want)
	}
}

func TestConcurrentCalls(t *testing.T) {
	_, path := startServer(t, nil)
	const n = 32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			arg := fmt.Sprint(i)
			var got []string
			if err := Call(context.Background(), path, "echo", []string{arg}, &got); err != nil {
				errs <- err
				return
			}
			if len(got) != 1 || got[0] != arg {
				errs <- fmt.Errorf("echo %s returned %q", arg, got)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestCloseRemovesSocket(t *testing.T) {
	path := sockPath(t)
	srv := newServer(t, path, testHandlers())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()
	if err := Call(context.Background(), path, "none", nil, nil); err != nil {
		t.Fatalf("Call before Close: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve after Close = %v, want nil", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket after Close: Lstat err = %v, want not exist", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	want := "no unplug serve is listening on " + path + ": start the server or choose the socket it listens on"
	if err := Call(context.Background(), path, "none", nil, nil); err == nil || err.Error() != want {
		t.Fatalf("Call after Close = %v, want %q", err, want)
	}
	if err := srv.Serve(context.Background()); err == nil {
		t.Fatal("Serve after Close succeeded")
	}
	if err := srv.Listen(path); err == nil {
		t.Fatal("Listen after Close succeeded")
	}
}

func TestServeStopsOnCancel(t *testing.T) {
	path := sockPath(t)
	srv := newServer(t, path, testHandlers())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	if err := Call(context.Background(), path, "none", nil, nil); err != nil {
		t.Fatalf("Call: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after its context was cancelled")
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket after cancel: Lstat err = %v, want not exist", err)
	}
}

func TestCloseWithoutServe(t *testing.T) {
	path := sockPath(t)
	srv := newServer(t, path, nil)
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Lstat after Close: %v, want not exist", err)
	}
}

func TestCloseLeavesForeignFile(t *testing.T) {
	path := sockPath(t)
	srv := newServer(t, path, nil)
	// Someone removes our socket and puts their own file in its place.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("theirs"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "theirs" {
		t.Fatalf("foreign file after Close: %q, %v", b, err)
	}
}

// waitFor runs f in a goroutine and fails if it has not returned within a
// generous bound: it detects hangs, it does not measure time.
func waitFor(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not return", what)
	}
}

func TestCloseInterruptsIdleClient(t *testing.T) {
	path := sockPath(t)
	srv := newServer(t, path, testHandlers())
	srv.readTimeout = time.Hour // only Close can end the read
	accepted := make(chan struct{}, 1)
	srv.testHookAccepted = func(net.Conn) { accepted <- struct{}{} }
	serve(t, srv)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-accepted
	waitFor(t, "Close with an idle client", func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if resp := parseResponse(t, string(b)); resp.OK || resp.Error != "unplug serve is shutting down" {
		t.Fatalf("idle client got %+v after Close, want shutting down", resp)
	}
}

func TestHandlerContextCancelledOnClose(t *testing.T) {
	started := make(chan struct{})
	handlerErr := make(chan error, 1)
	srv, path := startServer(t, map[string]HandlerFunc{
		"block": func(ctx context.Context, _ []string) (any, error) {
			close(started)
			<-ctx.Done()
			handlerErr <- ctx.Err()
			return nil, ctx.Err()
		},
	})
	callErr := make(chan error, 1)
	go func() { callErr <- Call(context.Background(), path, "block", nil, nil) }()
	<-started
	waitFor(t, "Close with a running handler", func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if err := <-handlerErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("handler ctx error = %v, want context.Canceled", err)
	}
	want := "unplug serve is shutting down; block was interrupted"
	if err := <-callErr; err == nil || err.Error() != want {
		t.Fatalf("Call = %v, want %q", err, want)
	}
}

func TestServeMisuse(t *testing.T) {
	srv := NewServer()
	if err := srv.Serve(context.Background()); err == nil || !strings.Contains(err.Error(), "Listen was not called") {
		t.Fatalf("Serve before Listen = %v", err)
	}
	srv = newServer(t, sockPath(t), nil)
	serve(t, srv)
	// Serve is running in another goroutine; a Call proves it is accepting.
	if err := Call(context.Background(), srv.path, "x", nil, nil); err == nil {
		t.Fatal("unknown op succeeded")
	}
	if err := srv.Serve(context.Background()); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second Serve = %v", err)
	}
}

func TestHandlePanics(t *testing.T) {
	h := testHandlers()["none"]
	tests := []struct {
		name string
		op   string
		h    HandlerFunc
	}{
		{name: "empty op", op: "", h: h},
		{name: "nil handler", op: "x", h: nil},
		{name: "duplicate", op: "dup", h: h},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := NewServer()
			srv.Handle("dup", h)
			defer func() {
				if recover() == nil {
					t.Fatalf("Handle(%q) did not panic", tt.op)
				}
			}()
			srv.Handle(tt.op, tt.h)
		})
	}
}

func TestAllowUID(t *testing.T) {
	tests := []struct {
		peer, self int
		wantErr    string
	}{
		{peer: 1000, self: 1000},
		{peer: 0, self: 1000},
		{peer: 0, self: 0},
		{peer: 1000, self: 0, wantErr: "uid 1000 may not control this unplug serve (it runs as uid 0); run the command as uid 0 or root"},
		{peer: 1001, self: 1000, wantErr: "uid 1001 may not control this unplug serve (it runs as uid 1000); run the command as uid 1000 or root"},
	}
	for _, tt := range tests {
		err := allowUID(tt.peer, tt.self)
		if (err == nil) != (tt.wantErr == "") || (err != nil && err.Error() != tt.wantErr) {
			t.Errorf("allowUID(%d, %d) = %v, want %q", tt.peer, tt.self, err, tt.wantErr)
		}
	}
}

func TestOneLine(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"  padded  ", "padded"},
		{"a\nb", "a; b"},
		{"a\r\n\r\nb\n", "a; b"},
		{"a\u2028b\u2029c\vd\fe\u0085f", "a; b; c; d; e; f"},
		{"", "unknown error"},
		{"\n \n", "unknown error"},
	}
	for _, tt := range tests {
		if got := oneLine(tt.in); got != tt.want {
			t.Errorf("oneLine(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
