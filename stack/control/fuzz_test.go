package control

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
)

// FuzzServe feeds arbitrary bytes to the protocol handler and checks that it
// always answers with exactly one line holding a well-formed response.
func FuzzServe(f *testing.F) {
	for _, seed := range []string{
		`{"v":1,"op":"echo","args":["drop dir=in for=3s"]}` + "\n",
		`{"op":"fail","args":["a","b\nc"]}` + "\n",
		`{"op":"none"}`,
		`{"v":2,"op":"echo"}` + "\n",
		`{"op":"nope"}` + "\n",
		`{"op":` + "\n",
		"\n",
		"",
	} {
		f.Add([]byte(seed))
	}
	srv := NewServer()
	for op, h := range testHandlers() {
		srv.Handle(op, h)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		rw := struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(data), &out}
		if err := srv.serveConn(context.Background(), rw); err != nil {
			t.Fatalf("serveConn: %v", err)
		}
		line, ok := bytes.CutSuffix(out.Bytes(), []byte("\n"))
		if !ok || bytes.IndexByte(line, '\n') >= 0 {
			t.Fatalf("response %q is not exactly one line", out.Bytes())
		}
		if !json.Valid(line) {
			t.Fatalf("response %q is not valid JSON", line)
		}
		var resp Response
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&resp); err != nil {
			t.Fatalf("response %q does not decode: %v", line, err)
		}
		switch {
		case resp.OK && resp.Error != "":
			t.Fatalf("ok response carries error %q", resp.Error)
		case !resp.OK && resp.Error == "":
			t.Fatalf("failed response %q has no error message", line)
		case !resp.OK && resp.Data != nil:
			t.Fatalf("failed response %q carries data", line)
		case strings.ContainsFunc(resp.Error, isLineBreak):
			t.Fatalf("error %q spans lines", resp.Error)
		}
	})
}
