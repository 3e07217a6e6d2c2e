package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestExecReferenceBadInput: exec --reference refuses what it cannot
// reproduce with iptables, with one line naming the rule and what is
// supported, exit 2, before anything runs.
func TestExecReferenceBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--fault", "loss 5%"}, `--reference cannot make --fault "loss 5%" of iptables rules (only drop is an iptables DROP); it supports drop [dir=in|out|both]`},
		{[]string{"--fault", "drop", "--fault", "drop conn=2"}, `--fault "drop conn=2"`},
		{[]string{"--fault", "drop match=data"}, `(match=data needs unplug's flow tracking)`},
		{[]string{"--fault", "drop for=rtos:3"}, `per-connection and counting selectors`},
		{[]string{"--json"}, "drop --json"},
		{[]string{"--transparent"}, "drop --forward and --transparent"},
		{[]string{"--forward", "8080=127.0.0.1:80"}, "drop --forward and --transparent"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append(append([]string{"exec", "--reference"}, tc.args...), "--", "true")
			code := run(context.Background(), args, &out, &errb)
			if code != exitUsage || !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, errb.String(), exitUsage, tc.want)
			}
			if out.Len() != 0 || strings.Count(strings.TrimSpace(errb.String()), "\n") > 0 {
				t.Errorf("want one line on stderr and nothing on stdout; got %q / %q", out.String(), errb.String())
			}
		})
	}
}
