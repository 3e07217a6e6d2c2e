package services

import (
	"bytes"
	"errors"
	"fmt"
	"html"
	"io"
	"strconv"
	"strings"
	"time"
)

// maxRequestHead bounds how much of a request the HTTP service buffers while
// looking for the blank line that ends the head.
const maxRequestHead = 64 << 10

// MaxBytes is the largest N that GET /bytes/N serves.
const MaxBytes = 1 << 30

// errHeadTooLarge means no end of the request head within maxRequestHead.
var errHeadTooLarge = errors.New("request head too large")

// headEnd returns the index of the newline that starts the blank line ending
// a request head in b, or -1.
func headEnd(b []byte) int {
	end := -1
	for _, sep := range []string{"\n\n", "\n\r\n"} {
		if i := bytes.Index(b, []byte(sep)); i >= 0 && (end < 0 || i < end) {
			end = i
		}
	}
	return end
}

// The http service (a session, session.go) answers one request the way
// Python's SimpleHTTPServer answers in a directory without the file (404
// and a small HTML page), except that GET /bytes/N answers 200 with N bytes
// of the pattern. It always closes, lingering first.

// Bounds of the lingering close after a response.
const (
	lingerTime  = 2 * time.Second
	lingerBytes = 256 << 10
)

// HTTPResponse returns the complete response the http service sends for a
// request whose buffered bytes are buffered, and whether the head (up to
// the blank line) was complete. A server outside the peer that must answer
// exactly like it (the iptables reference in internal/reference) uses it.
func HTTPResponse(buffered []byte) (resp []byte, complete bool) {
	end := headEnd(buffered)
	if end < 0 {
		if len(buffered) > maxRequestHead {
			var b bytes.Buffer
			respond(&b, nil, errHeadTooLarge)
			return b.Bytes(), true
		}
		return nil, false
	}
	var b bytes.Buffer
	respond(&b, buffered[:end], nil)
	return b.Bytes(), true
}

// respond writes the response to the request whose head is head; headErr is
// errHeadTooLarge when the head did not fit.
func respond(w io.Writer, head []byte, headErr error) {
	if headErr != nil {
		writeError(w, false, 431, "Request Header Fields Too Large",
			"The server refused this request because the request header fields are too large")
		return
	}
	line, _, _ := strings.Cut(string(head), "\n")
	words := strings.Fields(line)
	if len(words) < 2 {
		writeError(w, false, 400, fmt.Sprintf("Bad request syntax (%q)", strings.TrimSpace(line)),
			"Bad request syntax or unsupported method")
		return
	}
	method, path := words[0], words[1]
	headOnly := method == "HEAD"
	if method != "GET" && !headOnly {
		writeError(w, false, 501, fmt.Sprintf("Unsupported method (%q)", method),
			"Server does not support this operation")
		return
	}
	path, _, _ = strings.Cut(path, "?")
	if rest, ok := strings.CutPrefix(path, "/bytes/"); ok {
		if n, err := strconv.ParseUint(rest, 10, 64); err == nil {
			if n > MaxBytes {
				writeError(w, headOnly, 400, fmt.Sprintf("Requested %d bytes; the limit is %d", n, MaxBytes),
					"Bad request syntax or unsupported method")
				return
			}
			writeBytes(w, headOnly, int64(n))
			return
		}
	}
	writeError(w, headOnly, 404, "File not found", "Nothing matches the given URI")
}

// writeError writes a complete error response; for HEAD requests only the
// headers.
func writeError(w io.Writer, headOnly bool, code int, message, explain string) error {
	body := fmt.Sprintf(`<!DOCTYPE HTML>
<html lang="en">
    <head>
        <meta charset="utf-8">
        <title>Error response</title>
    </head>
    <body>
        <h1>Error response</h1>
        <p>Error code: %d</p>
        <p>Message: %s.</p>
        <p>Error code explanation: %d - %s.</p>
    </body>
</html>
`, code, html.EscapeString(message), code, explain)
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.0 %d %s\r\n", code, message)
	b.WriteString("Server: unplug\r\n")
	b.WriteString("Connection: close\r\n")
	b.WriteString("Content-Type: text/html\r\n")
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(body))
	if !headOnly {
		b.WriteString(body)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeBytes writes a 200 response carrying n bytes of the pattern, streamed.
func writeBytes(w io.Writer, headOnly bool, n int64) error {
	hdr := fmt.Sprintf("HTTP/1.0 200 OK\r\n"+
		"Server: unplug\r\n"+
		"Connection: close\r\n"+
		"Content-Type: application/octet-stream\r\n"+
		"Content-Length: %d\r\n\r\n", n)
	if _, err := io.WriteString(w, hdr); err != nil {
		return err
	}
	if headOnly {
		return nil
	}
	return writePattern(w, n)
}
