package reference

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack/fault"
)

// Supported is the part of the fault-rule grammar (docs/fault-rules.md)
// that `unplug exec --reference` turns into iptables rules.
const Supported = "drop [dir=in|out|both] [port=N] [flags=syn|fin|rst] [match=syn|syn-ack|fin|rst] [after=D] [for=D]"

// Rule is one iptables rule a fault rule becomes. A packet towards the
// peer (dir=in) is dropped in the INPUT chain of the server's namespace,
// one from the peer (dir=out) in the INPUT chain of the client's: either
// way on arrival, as the seed's rule did, so no sender's stack sees its
// own packet refused.
type Rule struct {
	// Fault is the fault rule's number (1 for the first --fault).
	Fault int
	// Dir is In or Out, never Both (a dir=both rule is two Rules).
	Dir packet.Direction
	// Proto is "", "tcp" or "udp" ("": every protocol).
	Proto string
	// Port is the peer's port (destination of dir=in, source of dir=out);
	// 0 is any.
	Port uint16
	// Mask and Comp are iptables' --tcp-flags MASK COMP (Mask 0: any).
	Mask, Comp uint8
	// Tag is the rule's comment, naming it in iptables' listing.
	Tag string
}

// flagNames are iptables' names of the TCP flags a rule can test.
var flagNames = []struct {
	name string
	bit  uint8
}{{"FIN", packet.FlagFIN}, {"SYN", packet.FlagSYN}, {"RST", packet.FlagRST}, {"ACK", packet.FlagACK}}

func flagList(v uint8) string {
	var parts []string
	for _, f := range flagNames {
		if v&f.bit != 0 {
			parts = append(parts, f.name)
		}
	}
	return strings.Join(parts, ",")
}

// Args are the rule's arguments after `iptables -A INPUT` (or -D).
func (r Rule) Args() []string {
	var a []string
	if r.Proto != "" {
		a = append(a, "-p", r.Proto)
	}
	if r.Port != 0 {
		opt := "--dport"
		if r.Dir == packet.Out {
			opt = "--sport"
		}
		a = append(a, opt, fmt.Sprint(r.Port))
	}
	if r.Mask != 0 {
		comp := flagList(r.Comp)
		if comp == "" {
			comp = "NONE"
		}
		a = append(a, "--tcp-flags", flagList(r.Mask), comp)
	}
	return append(a, "-m", "comment", "--comment", r.Tag, "-j", r.Chain())
}

// Chain is the rule's own chain, holding one DROP: the INPUT rule jumps
// to it while the fault is on, and its counter, which stays when the jump
// is removed, is how many packets iptables dropped for it.
func (r Rule) Chain() string { return r.Tag }

// String is the rule as a command line, for the report.
func (r Rule) String() string {
	where := "server"
	if r.Dir == packet.Out {
		where = "client"
	}
	args := strings.Join(r.Args(), " ")
	return where + ": iptables -A INPUT " + strings.TrimSuffix(args, "-j "+r.Chain()) + "-j DROP"
}

// Matches reports whether iptables would drop p (seen on the client's
// link) under this rule while it is in place. It mirrors the iptables
// matches above, not unplug's fault layer.
func (r Rule) Matches(p *packet.Packet) bool {
	if p.Dir != r.Dir || p.Version != 4 {
		return false
	}
	switch r.Proto {
	case "tcp":
		if p.Proto != packet.ProtoTCP {
			return false
		}
	case "udp":
		if p.Proto != packet.ProtoUDP {
			return false
		}
	}
	if r.Port != 0 || r.Mask != 0 {
		if p.Fragment == packet.LaterFragment {
			return false // no transport header: iptables' port match fails
		}
	}
	if r.Port != 0 {
		port := p.DstPort
		if r.Dir == packet.Out {
			port = p.SrcPort
		}
		if port != r.Port {
			return false
		}
	}
	return p.Flags&r.Mask == r.Comp
}

// flagsTCP and matchTCP are the flags= and match= classes iptables'
// --tcp-flags MASK COMP expresses exactly, in the grammar's order.
var (
	flagsTCP = []struct {
		class      fault.FlagClass
		mask, comp uint8
	}{
		{fault.ClassSYN, packet.FlagSYN, packet.FlagSYN},
		{fault.ClassFIN, packet.FlagFIN, packet.FlagFIN},
		{fault.ClassRST, packet.FlagRST, packet.FlagRST},
	}
	matchTCP = []struct {
		class      fault.MatchClass
		mask, comp uint8
	}{
		{fault.MatchSYN, packet.FlagSYN | packet.FlagACK, packet.FlagSYN},
		{fault.MatchSYNACK, packet.FlagSYN | packet.FlagACK, packet.FlagSYN | packet.FlagACK},
		{fault.MatchFIN, packet.FlagFIN, packet.FlagFIN},
		{fault.MatchRST, packet.FlagRST, packet.FlagRST},
	}
)

// Translate turns fault rules into iptables rules, or says which rule it
// cannot express and what it can (one line).
func Translate(specs []fault.Spec) ([]Rule, error) {
	var out []Rule
	for i, sp := range specs {
		rules, why := translate(i+1, sp)
		if why != "" {
			return nil, fmt.Errorf("--reference cannot make --fault %q of iptables rules (%s); it supports %s", sp.String(), why, Supported)
		}
		out = append(out, rules...)
	}
	return out, nil
}

func translate(n int, sp fault.Spec) ([]Rule, string) {
	if sp.Action != fault.ActDrop {
		return nil, "only drop is an iptables DROP"
	}
	// Whatever else the rule says is beyond iptables' matches.
	known := fault.Spec{Action: sp.Action, Dir: sp.Dir, Port: sp.Port, Flags: sp.Flags, Match: sp.Match, After: sp.After, For: sp.For}
	if !reflect.DeepEqual(known, sp) {
		return nil, "per-connection and counting selectors need unplug's flow tracking"
	}
	if sp.Flags != 0 && sp.Match != 0 {
		return nil, "use flags= or match=, not both"
	}
	type class struct{ mask, comp uint8 }
	var classes []class
	for _, f := range flagsTCP {
		if sp.Flags&f.class != 0 {
			classes = append(classes, class{f.mask, f.comp})
		}
	}
	if rest := sp.Flags &^ (fault.ClassSYN | fault.ClassFIN | fault.ClassRST); rest != 0 {
		return nil, "flags=" + rest.String() + " needs the payload length"
	}
	for _, f := range matchTCP {
		if sp.Match&f.class != 0 {
			classes = append(classes, class{f.mask, f.comp})
		}
	}
	if rest := sp.Match &^ (fault.MatchSYN | fault.MatchSYNACK | fault.MatchFIN | fault.MatchRST); rest != 0 {
		return nil, "match=" + rest.String() + " needs unplug's flow tracking"
	}
	protos := []string{""}
	switch {
	case len(classes) > 0:
		protos = []string{"tcp"}
	case sp.Port != 0:
		protos = []string{"tcp", "udp"}
	}
	if len(classes) == 0 {
		classes = []class{{}}
	}
	var dirs []packet.Direction
	switch sp.Dir {
	case packet.In, packet.Out:
		dirs = []packet.Direction{sp.Dir}
	default:
		dirs = []packet.Direction{packet.In, packet.Out}
	}
	var out []Rule
	for _, d := range dirs {
		for _, p := range protos {
			for _, c := range classes {
				out = append(out, Rule{Fault: n, Dir: d, Proto: p, Port: sp.Port, Mask: c.mask, Comp: c.comp,
					Tag: fmt.Sprintf("unplug-%d.%d", n, len(out)+1)})
			}
		}
	}
	return out, ""
}
