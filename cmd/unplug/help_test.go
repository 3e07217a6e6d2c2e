package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestHelp checks that each command's help says how to use it: fault lists
// its subcommands and the rule grammar, run lists the scenarios and their
// parameters, exec shows `-- CMD`, `unplug help CMD` is `CMD --help`.
func TestHelp(t *testing.T) {
	grammar := []string{"ACTION [SELECTORS] [SCHEDULE]", "dir=in|out|both", "for=D", "docs/fault-rules.md"}
	tests := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"fault --help", []string{"fault", "--help"}, exitOK,
			append([]string{"usage: unplug fault SUBCOMMAND", "add SPEC...", "list", "rm ID...", "clear"}, grammar...)},
		{"help fault", []string{"help", "fault"}, exitOK, []string{"usage: unplug fault SUBCOMMAND", "add SPEC..."}},
		{"fault add --help", []string{"fault", "add", "--help"}, exitOK,
			append([]string{"usage: unplug fault add SPEC...", "--control"}, grammar...)},
		{"help fault add", []string{"help", "fault", "add"}, exitOK, []string{"usage: unplug fault add SPEC..."}},
		{"run --help", []string{"run", "--help"}, exitOK,
			[]string{"usage: unplug run NAME", "--clock", "--expect", "Exit status: 0 when the verdict is PASS, 1 when it is FAIL",
				"timeout", "--retries2 4", "brief-outage", "--outage 3s", "loss", "--loss 5%"}},
		{"help run", []string{"help", "run"}, exitOK, []string{"usage: unplug run NAME", "keepalive", "--intvl 1s"}},
		{"help run timeout", []string{"help", "run", "timeout"}, exitOK,
			[]string{"usage: unplug run timeout [--PARAM VALUE]...", "request sent into a dead link", "--retries2", "--user-timeout", "--json"}},
		{"exec --help", []string{"exec", "--help"}, exitOK,
			append([]string{"usage: unplug exec [flags] -- CMD [ARGS...]", "--fault", "--forward", "127"}, grammar...)},
		{"help exec", []string{"help", "exec"}, exitOK, []string{"-- CMD"}},
		{"serve --help", []string{"serve", "--help"}, exitOK, []string{"usage: unplug serve", "198.18.0.2", "--pcap"}},
		{"help", []string{"help"}, exitOK, []string{"usage: unplug COMMAND", "serve", "exec", "unplug help COMMAND", "--version"}},
		{"help unknown", []string{"help", "frobnicate"}, exitUsage, []string{`unknown command "frobnicate"`}},
		{"no arguments", nil, exitUsage, []string{"usage: unplug COMMAND"}},
		{"bad --svg-time", []string{"run", "timeout", "--svg-time", "sideways"}, exitUsage, []string{`--svg-time "sideways": use auto, linear or log`}},
		{"run --help lists --svg-time", []string{"run", "--help"}, exitOK, []string{"--svg-time"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if code := run(context.Background(), tt.args, &out, &out); code != tt.code {
				t.Fatalf("unplug %s exited %d, want %d\n%s", strings.Join(tt.args, " "), code, tt.code, out.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("unplug %s: output lacks %q:\n%s", strings.Join(tt.args, " "), w, out.String())
				}
			}
		})
	}
}

// TestVersion checks --version prints the module version and Go version
// from the build information.
func TestVersion(t *testing.T) {
	for _, arg := range []string{"--version", "version"} {
		var out bytes.Buffer
		if code := run(context.Background(), []string{arg}, &out, &out); code != exitOK {
			t.Fatalf("unplug %s exited %d: %s", arg, code, out.String())
		}
		line := out.String()
		if strings.Count(line, "\n") != 1 || !strings.HasPrefix(line, "unplug ") || !strings.Contains(line, "go1.") {
			t.Errorf("unplug %s = %q, want one line: unplug VERSION, goVERSION[, commit …]", arg, line)
		}
	}
}

// TestFaultAddUnquoted checks that a rule the shell split into words gets
// the hint to quote it, before any control socket is dialled.
func TestFaultAddUnquoted(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"fault", "add", "drop", "for=3s"}, "quote it: unplug fault add 'drop for=3s'"},
		{[]string{"fault", "add", "loss", "20%", "dir=out"}, "quote it: unplug fault add 'loss 20% dir=out'"},
		{[]string{"fault", "add", "drop", "sideways"}, "each rule is one argument"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		code := run(context.Background(), append(tt.args, "--control", "/nonexistent/h6.sock"), &out, &out)
		if code != exitUsage || strings.Count(out.String(), "\n") != 1 || !strings.Contains(out.String(), tt.want) {
			t.Errorf("unplug %s: exit %d, %q; want exit 2 and one line containing %q", strings.Join(tt.args, " "), code, out.String(), tt.want)
		}
	}
}
