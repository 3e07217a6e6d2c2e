package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestRunReferenceBadInput: --reference refuses what it cannot compare,
// with one line and exit 2, before anything runs.
func TestRunReferenceBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "loss", "--reference"}, "--reference covers timeout, brief-outage, sendbuf-full, keepalive, syn-timeout, not loss"},
		{[]string{"run", "timeout", "--reference", "--clock", "virtual"}, "use --clock real"},
		{[]string{"run", "timeout", "--reference", "--json"}, "drop --json"},
		{[]string{"run", "syn-timeout", "--reference", "--outage", "2s"}, "drop --outage"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errb)
			if code != exitUsage || !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, errb.String(), exitUsage, tc.want)
			}
			if out.Len() != 0 || strings.Count(strings.TrimSpace(errb.String()), "\n") > 0 {
				t.Errorf("want one line on stderr and nothing on stdout; got %q / %q", out.String(), errb.String())
			}
		})
	}
}
