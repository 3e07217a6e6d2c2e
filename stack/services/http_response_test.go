package services

import (
	"strings"
	"testing"
)

// TestHTTPResponse: the helper answers like the service, once the head is
// complete.
func TestHTTPResponse(t *testing.T) {
	for _, tc := range []struct {
		in, status string
		complete   bool
	}{
		{"GET / HTTP/1.0\r\n", "", false},
		{"GET / HTTP/1.0\r\n\r\n", "HTTP/1.0 404 File not found", true},
		{"GET /bytes/5 HTTP/1.0\r\n\r\n", "HTTP/1.0 200 OK", true},
		{"nonsense\r\n\r\n", "HTTP/1.0 400", true},
		{strings.Repeat("x", maxRequestHead+1), "HTTP/1.0 431", true},
	} {
		resp, complete := HTTPResponse([]byte(tc.in))
		if complete != tc.complete || !strings.HasPrefix(string(resp), tc.status) {
			t.Errorf("HTTPResponse(%.20q) = %.40q, %v; want %q…, %v", tc.in, resp, complete, tc.status, tc.complete)
		}
	}
}
