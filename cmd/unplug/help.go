package main

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

// faultGrammar is the rule grammar shared by --fault and `unplug fault add`,
// shown by their --help (docs/fault-rules.md has every action and selector).
const faultGrammar = `fault rules (one quoted argument each): ACTION [SELECTORS] [SCHEDULE]
  ACTION    drop | reject | loss P% | loss ge p=P r=P | delay D [jitter=J]
            | duplicate [P%] | reorder [P%] [gap=K] | corrupt [P%] | rate R [queue=SIZE] | rst-at-seq=N
  SELECTORS dir=in|out|both   in = towards the peer, out = from the peer (default both)
            port=N            the peer-side TCP/UDP port
            flags=CLASS[,...] syn | fin | rst | ack-only | data
            match=CLASS[,...] syn-ack | retransmission | keepalive-probe | zero-window-probe | ...
            flow=HOST:PORT  conn=N  flows=existing|new  after-bytes=SIZE  nth=K | every=K
  SCHEDULE  after=D|established|bytes:SIZE   start D after the rule is added (or per connection)
            for=D             then last D (default: until removed)
            until=rto:N       heal at the connection's Nth retransmission
            count=N           expire after acting on N packets
  examples  'drop for=3s'  'drop dir=in port=80'  'loss 20% dir=out'  'delay 150ms jitter=20ms'
  all of it: docs/fault-rules.md
`

// helpText is what a command's --help prints around its flags.
type helpText struct {
	usage string // after "usage: "
	intro string // before the flags (optional)
	outro string // after the flags (optional)
}

// helps maps a flag set's name ("unplug exec", "unplug fault add") to its
// help; parseFlags prints it for --help.
var helps = map[string]helpText{
	"unplug serve": {usage: "unplug serve [flags]",
		intro: "Runs the peer (gVisor netstack) on a TUN device: 198.18.0.2 and fd00:198:18::2, services on\n" +
			"80 (http), 7 (echo), 9 (discard), 5001 (sink), 5002 (source). Ctrl-C stops it.\n" +
			"`unplug fault` and `unplug status` talk to it over --control."},
	"unplug exec": {usage: "unplug exec [flags] -- CMD [ARGS...]",
		intro: "Runs CMD in a private network namespace whose only route is the faulty link to the peer\n" +
			"(198.18.0.2); no root needed. CMD's exit code becomes unplug's (127: not found).\n" +
			"Example: unplug exec --fault 'drop after=1s for=5s' -- sh -c 'sleep 2; curl -s http://198.18.0.2/'",
		outro: "\n" + faultGrammar},
	"unplug fault": {usage: "unplug fault SUBCOMMAND [flags] [ARGS]",
		intro: "Changes the rules of a running `unplug serve` over its control socket:\n" +
			"  add SPEC...   install rules (each SPEC one quoted argument), prints their ids\n" +
			"  list          the rules with their counters (--json)\n" +
			"  rm ID...      remove rules\n" +
			"  clear         remove every rule",
		outro: "\n" + faultGrammar},
	"unplug fault add": {usage: "unplug fault add SPEC... [flags]",
		intro: "Installs each SPEC (one quoted argument per rule) on the running serve and prints its id.\n" +
			"Example: unplug fault add 'drop dir=in for=3s'",
		outro: "\n" + faultGrammar},
	"unplug fault list":  {usage: "unplug fault list [--json] [flags]"},
	"unplug fault rm":    {usage: "unplug fault rm ID... [flags]"},
	"unplug fault clear": {usage: "unplug fault clear [flags]"},
	"unplug status": {usage: "unplug status [--json] [flags]",
		intro: "Shows a running serve's connections (state, RTT, RTO, retransmissions), link counters and rules."},
	"unplug scenarios": {usage: "unplug scenarios",
		intro: "Lists the experiments `unplug run` knows, with their parameters and defaults."},
	"unplug bench": {usage: "unplug bench [flags]",
		intro: "Measures the peer against kernel loopback in a private namespace (needs root); exit 1 when a target is missed."},
}

// helpFor returns the help of the flag set called name.
func helpFor(name string) helpText {
	h, ok := helps[name]
	if !ok {
		h.usage = name + " [flags]"
	}
	return h
}

// printHelp writes h around a flag set's usages.
func printHelp(w io.Writer, h helpText, flagUsages string) {
	fmt.Fprintf(w, "usage: %s\n", h.usage)
	if h.intro != "" {
		fmt.Fprintf(w, "\n%s\n", h.intro)
	}
	if flagUsages != "" {
		fmt.Fprintf(w, "\nflags:\n%s", flagUsages)
	}
	if h.outro != "" {
		fmt.Fprint(w, h.outro)
	}
}

// version is the module version and VCS state the binary was built from.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unplug (no build information)"
	}
	parts := []string{bi.Main.Version, bi.GoVersion}
	var rev, modified, when string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		case "vcs.time":
			when = s.Value
		}
	}
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if modified == "true" {
			rev += " (modified)"
		}
		parts = append(parts, "commit "+rev)
	}
	if when != "" {
		parts = append(parts, when)
	}
	return "unplug " + strings.Join(parts, ", ")
}
