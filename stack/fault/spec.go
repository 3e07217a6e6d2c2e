package fault

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Action is what a rule does to the packets it matches.
type Action uint8

// Actions.
const (
	ActDrop  Action = iota + 1 // discard every matching packet
	ActLoss                    // discard each matching packet with probability Loss
	ActDelay                   // hold each matching packet for Delay (± Jitter)
)

// String returns the action's keyword in the spec grammar.
func (a Action) String() string {
	switch a {
	case ActDrop:
		return "drop"
	case ActLoss:
		return "loss"
	case ActDelay:
		return "delay"
	}
	return "none"
}

// FlagClass is a set of TCP segment classes a rule can be restricted to with
// the flags= selector. A segment matches when it belongs to any class in the
// set.
type FlagClass uint8

// Segment classes for the flags= selector.
const (
	ClassSYN     FlagClass = 1 << iota // SYN set (SYN and SYN-ACK)
	ClassFIN                           // FIN set
	ClassRST                           // RST set
	ClassAckOnly                       // ACK without payload, SYN, FIN or RST
	ClassData                          // carries payload
)

var classNames = []struct {
	name  string
	class FlagClass
}{
	{"syn", ClassSYN}, {"fin", ClassFIN}, {"rst", ClassRST},
	{"ack-only", ClassAckOnly}, {"data", ClassData},
}

// Classes returns the classes the TCP segment p belongs to (0 for non-TCP).
func Classes(p *Packet) FlagClass {
	if p.Proto != ProtoTCP {
		return 0
	}
	var c FlagClass
	if p.Flags&FlagSYN != 0 {
		c |= ClassSYN
	}
	if p.Flags&FlagFIN != 0 {
		c |= ClassFIN
	}
	if p.Flags&FlagRST != 0 {
		c |= ClassRST
	}
	if p.PayloadLen > 0 {
		c |= ClassData
	} else if p.Flags&(FlagSYN|FlagFIN|FlagRST) == 0 && p.Flags&FlagACK != 0 {
		c |= ClassAckOnly
	}
	return c
}

// String lists the classes joined by commas, as in the grammar.
func (c FlagClass) String() string {
	var parts []string
	for _, n := range classNames {
		if c&n.class != 0 {
			parts = append(parts, n.name)
		}
	}
	return strings.Join(parts, ",")
}

// Spec is a parsed fault rule: an action, the packets it selects and when it
// applies. The zero values of the selectors select everything; the zero
// schedule means "from now on, forever".
type Spec struct {
	Action Action
	Loss   float64       // probability in (0, 1] for ActLoss
	Delay  time.Duration // ActDelay hold time
	Jitter time.Duration // ActDelay: uniform extra hold in [0, Jitter)

	Dir   Direction // In, Out or Both (default)
	Port  uint16    // peer-side TCP/UDP port; 0 = any
	Flags FlagClass // TCP segment classes; 0 = any packet

	After time.Duration // rule starts this long after it was added
	For   time.Duration // and lasts this long; 0 = until removed
	Count int           // expires after acting on this many packets; 0 = no limit
}

// SpecError is a malformed fault spec. Its message is one line naming the bad
// token and what would be accepted.
type SpecError struct {
	Spec, Token, Reason string
}

// Error implements error.
func (e *SpecError) Error() string {
	return fmt.Sprintf("fault spec %q: %q: %s", e.Spec, e.Token, e.Reason)
}

// ParseSpec parses one rule in the grammar documented in the README:
//
//	drop | loss P% | delay D [jitter=J]
//	  [dir=in|out|both] [port=N] [flags=syn|fin|rst|ack-only|data[,...]]
//	  [after=D] [for=D] [count=N]
func ParseSpec(s string) (Spec, error) {
	fields := strings.Fields(s)
	bad := func(tok, reason string) (Spec, error) {
		return Spec{}, &SpecError{Spec: s, Token: tok, Reason: reason}
	}
	if len(fields) == 0 {
		return bad("", "empty spec; start with an action: drop, loss P% or delay D")
	}
	sp := Spec{Dir: Both}
	rest := fields[1:]
	switch fields[0] {
	case "drop":
		sp.Action = ActDrop
	case "loss", "delay":
		if len(rest) == 0 || strings.Contains(rest[0], "=") {
			if fields[0] == "loss" {
				return bad(fields[0], "needs a probability, e.g. loss 20%")
			}
			return bad(fields[0], "needs a duration, e.g. delay 150ms")
		}
		arg := rest[0]
		rest = rest[1:]
		if fields[0] == "loss" {
			sp.Action = ActLoss
			p, err := parsePercent(arg)
			if err != nil {
				return bad(arg, err.Error())
			}
			sp.Loss = p
		} else {
			sp.Action = ActDelay
			d, err := parseDuration(arg)
			if err != nil || d <= 0 {
				return bad(arg, "delay must be a positive duration such as 150ms")
			}
			sp.Delay = d
		}
	default:
		return bad(fields[0], "unknown action; use drop, loss P% or delay D")
	}
	seen := map[string]bool{}
	for _, tok := range rest {
		key, val, ok := strings.Cut(tok, "=")
		if !ok || val == "" {
			return bad(tok, "expected key=value (dir, port, flags, after, for, count, jitter)")
		}
		if seen[key] {
			return bad(tok, "given twice")
		}
		seen[key] = true
		if err := sp.set(key, val); err != nil {
			return bad(tok, err.Error())
		}
	}
	return sp, nil
}

func (sp *Spec) set(key, val string) error {
	switch key {
	case "dir":
		switch val {
		case "in":
			sp.Dir = In
		case "out":
			sp.Dir = Out
		case "both":
			sp.Dir = Both
		default:
			return fmt.Errorf("dir must be in (towards the peer), out (from the peer) or both")
		}
	case "port":
		n, err := strconv.ParseUint(val, 10, 16)
		if err != nil || n == 0 {
			return fmt.Errorf("port must be 1-65535")
		}
		sp.Port = uint16(n)
	case "flags":
	classes:
		for _, name := range strings.Split(val, ",") {
			for _, n := range classNames {
				if n.name == name {
					sp.Flags |= n.class
					continue classes
				}
			}
			return fmt.Errorf("unknown flag class %q; use syn, fin, rst, ack-only or data", name)
		}
	case "after", "for", "jitter":
		d, err := parseDuration(val)
		if err != nil || d < 0 || (key == "for" && d == 0) {
			return fmt.Errorf("%s must be a positive duration such as 3s or 250ms", key)
		}
		switch key {
		case "after":
			sp.After = d
		case "for":
			sp.For = d
		default:
			if sp.Action != ActDelay {
				return fmt.Errorf("jitter only applies to delay")
			}
			sp.Jitter = d
		}
	case "count":
		n, err := strconv.Atoi(val)
		if err != nil || n <= 0 {
			return fmt.Errorf("count must be a positive integer")
		}
		sp.Count = n
	default:
		return fmt.Errorf("unknown key %q; use dir, port, flags, after, for, count or jitter", key)
	}
	return nil
}

func parsePercent(s string) (float64, error) {
	num, ok := strings.CutSuffix(s, "%")
	if !ok {
		return 0, fmt.Errorf("loss needs a percentage such as 20%%")
	}
	p, err := strconv.ParseFloat(num, 64)
	if err != nil || !(p > 0 && p <= 100) {
		return 0, fmt.Errorf("loss must be a percentage in (0, 100]")
	}
	return p / 100, nil
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	return d, nil
}

// String renders the spec back in canonical grammar; ParseSpec(s.String())
// yields s again.
func (sp Spec) String() string {
	var b strings.Builder
	b.WriteString(sp.Action.String())
	switch sp.Action {
	case ActLoss:
		b.WriteString(" " + strconv.FormatFloat(sp.Loss*100, 'g', -1, 64) + "%")
	case ActDelay:
		b.WriteString(" " + sp.Delay.String())
		if sp.Jitter > 0 {
			b.WriteString(" jitter=" + sp.Jitter.String())
		}
	}
	if sp.Dir != Both && sp.Dir != 0 {
		b.WriteString(" dir=" + sp.Dir.String())
	}
	if sp.Port != 0 {
		b.WriteString(" port=" + strconv.Itoa(int(sp.Port)))
	}
	if sp.Flags != 0 {
		b.WriteString(" flags=" + sp.Flags.String())
	}
	if sp.After > 0 {
		b.WriteString(" after=" + sp.After.String())
	}
	if sp.For > 0 {
		b.WriteString(" for=" + sp.For.String())
	}
	if sp.Count > 0 {
		b.WriteString(" count=" + strconv.Itoa(sp.Count))
	}
	return b.String()
}
