package services

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestServeKernel: on a kernel socket (loopback) the built-in services
// answer as the peer's do — http with HTTPResponse's bytes and a close,
// echo with the same bytes, discard with nothing — and a closed done
// ends a session that would run forever (source).
func TestServeKernel(t *testing.T) {
	for _, tc := range []struct {
		name, send string
		want       func() []byte
		forever    bool
	}{
		{name: ServiceHTTP, send: "GET /404 HTTP/1.0\r\n\r\n", want: func() []byte {
			r, _ := HTTPResponse([]byte("GET /404 HTTP/1.0\r\n\r\n"))
			return r
		}},
		{name: ServiceEcho, send: "hello", want: func() []byte { return []byte("hello") }},
		{name: ServiceDiscard, send: "hello", want: func() []byte { return nil }},
		{name: ServiceSource, forever: true, want: func() []byte { return Pattern(0, 1000) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Skip(err)
			}
			defer ln.Close()
			done := make(chan struct{})
			served := make(chan struct{})
			go func() {
				defer close(served)
				c, err := ln.Accept()
				if err != nil {
					return
				}
				f, _ := c.(*net.TCPConn).File()
				c.Close()
				fd, err := unix.Dup(int(f.Fd()))
				f.Close()
				if err != nil {
					return
				}
				ServeKernel(done, tc.name, fd)
			}()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if tc.send != "" {
				c.Write([]byte(tc.send))
			}
			want := tc.want()
			if tc.forever {
				got := make([]byte, len(want))
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, want) {
					t.Errorf("read %q, %v; want the pattern", got, err)
				}
				close(done)
				<-served
				return
			}
			if tc.name != ServiceHTTP {
				c.(*net.TCPConn).CloseWrite() // echo and discard end at the client's FIN
			}
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("read %q, %v; want %q", got, err, want)
			}
			close(done)
			<-served
		})
	}
}
