package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ProtocolVersion is the control protocol version this package speaks. It is
// bumped only on incompatible changes, so that a mismatched client and server
// fail with a clear message instead of misreading each other.
const ProtocolVersion = 1

// MaxRequestSize is the largest request line, in bytes and without the
// newline, that a server reads. Requests are short fault specs; the limit
// stops a misbehaving client from making the server buffer unbounded input.
const MaxRequestSize = 64 << 10

// Request is one control request as sent on the wire.
type Request struct {
	// V is the protocol version; 0 (absent) means version 1.
	V int `json:"v,omitempty"`
	// Op names the operation, e.g. "fault.add" or "status".
	Op string `json:"op"`
	// Args are the operation's arguments, passed to the handler unchanged.
	Args []string `json:"args,omitempty"`
}

// Response is one control response as sent on the wire. Exactly one of Data
// (when OK) or Error (when not OK) is meaningful.
type Response struct {
	// OK reports whether the operation succeeded.
	OK bool `json:"ok"`
	// Data is the handler's result encoded as JSON; absent when the handler
	// returned nil.
	Data json.RawMessage `json:"data,omitempty"`
	// Error is a one-line, user-facing message when OK is false.
	Error string `json:"error,omitempty"`
}

// Errors from reading a request; their texts go to the client verbatim.
var (
	errTooLarge = fmt.Errorf("request too large: more than %d bytes before the newline", MaxRequestSize)
	errEmpty    = errors.New("empty request: send one JSON object followed by a newline")
)

// readRequest reads one request line from r: bytes up to the first newline,
// or up to end of input when the client half-closes without one.
func readRequest(r io.Reader) ([]byte, error) {
	var line []byte
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			line = append(line, buf[:i]...)
			if len(line) > MaxRequestSize {
				return nil, errTooLarge
			}
			return line, nil
		}
		line = append(line, buf[:n]...)
		if len(line) > MaxRequestSize {
			return nil, errTooLarge
		}
		if errors.Is(err, io.EOF) {
			if len(bytes.TrimSpace(line)) == 0 {
				return nil, errEmpty
			}
			return line, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read request: %w", err)
		}
	}
}

// decodeRequest parses and validates one request line.
func decodeRequest(line []byte) (Request, error) {
	var req Request
	if len(bytes.TrimSpace(line)) == 0 {
		return req, errEmpty
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("malformed request: %v; expected {\"v\":%d,\"op\":\"...\",\"args\":[...]}", err, ProtocolVersion)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return req, errors.New("malformed request: trailing data after the JSON object; send exactly one object per line")
	}
	if req.V != 0 && req.V != ProtocolVersion {
		return req, fmt.Errorf("unsupported control protocol version %d (this unplug serve speaks version %d); use an unplug binary that matches the running server", req.V, ProtocolVersion)
	}
	if req.Op == "" {
		return req, errors.New(`malformed request: missing "op"`)
	}
	return req, nil
}

// errorResponse builds a failure response whose message fits on one line.
func errorResponse(err error) Response {
	return Response{Error: oneLine(err.Error())}
}

// oneLine collapses line breaks so every error message stays on one line,
// as the protocol and the CLI's output promise.
func oneLine(s string) string {
	var parts []string
	for _, f := range strings.FieldsFunc(s, isLineBreak) {
		if f = strings.TrimSpace(f); f != "" {
			parts = append(parts, f)
		}
	}
	if len(parts) == 0 {
		return "unknown error"
	}
	return strings.Join(parts, "; ")
}

// isLineBreak reports whether r ends a line on a terminal or in an editor.
func isLineBreak(r rune) bool {
	switch r {
	case '\n', '\r', '\v', '\f', 0x85, 0x2028, 0x2029:
		return true
	}
	return false
}

// writeResponse writes resp as one JSON line.
func writeResponse(w io.Writer, resp Response) error {
	b, err := json.Marshal(resp)
	if err != nil {
		// Only Data can fail to marshal, and it is already valid JSON.
		b, _ = json.Marshal(errorResponse(fmt.Errorf("encode response: %w", err)))
	}
	b = append(b, '\n')
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write response: %w", err)
	}
	return nil
}
