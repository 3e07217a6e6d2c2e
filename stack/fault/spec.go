package fault

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/internal/units"
)

// Action is what a rule does to the packets it matches.
type Action uint8

// Actions.
const (
	ActDrop      Action = iota + 1 // discard every matching packet
	ActLoss                        // discard each matching packet with probability Loss
	ActDelay                       // hold each matching packet for Delay (± Jitter)
	ActReject                      // discard a TCP segment and answer its sender with a RST
	ActRSTAtSeq                    // replace the segment carrying relative sequence Seq by a RST
	ActDuplicate                   // forward the packet and, with probability Prob, a copy
	ActReorder                     // with probability Prob, let Gap later packets overtake it
	ActCorrupt                     // with probability Prob, forward it with a broken checksum
	ActRate                        // forward at Rate bits/s through a queue of Queue bytes
	ActBurstLoss                   // discard by the Gilbert–Elliott model GE
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
	case ActReject:
		return "reject"
	case ActRSTAtSeq:
		return "rst-at-seq"
	case ActDuplicate:
		return "duplicate"
	case ActReorder:
		return "reorder"
	case ActCorrupt:
		return "corrupt"
	case ActRate:
		return "rate"
	case ActBurstLoss:
		return "loss ge"
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

var classNames = []named[FlagClass]{
	{"syn", ClassSYN}, {"fin", ClassFIN}, {"rst", ClassRST},
	{"ack-only", ClassAckOnly}, {"data", ClassData},
}

// Classes returns the classes the TCP segment p belongs to (0 for non-TCP):
// the stateless meanings of match= (Meaning), grouped as flags= names them.
func Classes(p *packet.Packet) FlagClass {
	m := Meaning(p)
	var c FlagClass
	for _, g := range classOfMeaning {
		if m&g.m != 0 {
			c |= g.c
		}
	}
	return c
}

// classOfMeaning maps match= meanings to flags= classes: flags=syn is a
// SYN with or without ACK, ack-only is match=pure-ack.
var classOfMeaning = [...]struct {
	m MatchClass
	c FlagClass
}{
	{MatchSYN | MatchSYNACK, ClassSYN}, {MatchFIN, ClassFIN}, {MatchRST, ClassRST},
	{MatchPureAck, ClassAckOnly}, {MatchData, ClassData},
}

// String lists the classes joined by commas, as in the grammar.
func (c FlagClass) String() string { return joinNames(c, classNames) }

// FlowAge restricts a rule to connections that were open when it started
// (FlowsExisting) or that opened later (FlowsNew); 0 selects both.
type FlowAge uint8

// Flow ages for the flows= selector.
const (
	FlowsExisting FlowAge = 1
	FlowsNew      FlowAge = 2
)

// String returns "existing", "new" or "".
func (a FlowAge) String() string {
	switch a {
	case FlowsExisting:
		return "existing"
	case FlowsNew:
		return "new"
	}
	return ""
}

// GilbertElliott are the parameters of the two-state burst-loss model: in
// the Good state a packet is delivered with probability K, in the Bad state
// with probability H; after each packet the chain moves Good→Bad with
// probability P and Bad→Good with probability R. The mean burst length is
// 1/R packets. All are probabilities in [0, 1].
type GilbertElliott struct {
	P, R, H, K float64
}

// DefaultRateQueue is how many bytes a rate rule lets wait when queue= is
// not given; packets beyond it are tail-dropped.
const DefaultRateQueue = 64 << 10

// Spec is a parsed fault rule: an action, the packets it selects and when it
// applies. The zero values of the selectors select everything; the zero
// schedule means "from now on, forever".
type Spec struct {
	Action Action
	Loss   float64       // probability in (0, 1] for ActLoss
	Delay  time.Duration // ActDelay hold time
	Jitter time.Duration // ActDelay: uniform extra hold in [0, Jitter)

	Prob  float64        // ActDuplicate, ActReorder, ActCorrupt: probability in (0, 1]
	Gap   int            // ActReorder: later packets that overtake a held one; 0 means 1
	Rate  uint64         // ActRate: bits per second
	Queue int64          // ActRate: bytes that may wait; 0 means DefaultRateQueue
	Seq   uint32         // ActRSTAtSeq: relative sequence number (first data byte = 1)
	GE    GilbertElliott // ActBurstLoss

	Dir   packet.Direction // In, Out or Both; 0 means Both (Controller.Add stores Both)
	Port  uint16           // peer-side TCP/UDP port; 0 = any
	Flags FlagClass        // TCP segment classes; 0 = any packet

	Match      MatchClass     // TCP segment meanings (match=); 0 = any packet
	Flow       netip.AddrPort // one connection by either end's address and port; zero = any
	Conn       int            // only the Conn-th connection opened after the rule started; 0 = any
	Flows      FlowAge        // connections open at the rule's start, or opened later; 0 = both
	AfterBytes int64          // only segments carrying stream bytes beyond the first AfterBytes
	Nth        int            // act on the Nth packet selected, only
	Every      int            // act on every Every-th packet selected

	After            time.Duration // rule starts this long after it was added
	AfterEstablished bool          // per connection: only once its handshake completed
	AfterFlowBytes   int64         // per connection: only once it carried this many payload bytes
	For              time.Duration // and lasts this long; 0 = until removed
	UntilRTO         int           // per connection: heals at its UntilRTO-th retransmission
	Count            int           // expires after acting on this many packets; 0 = no limit
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

const actionList = "drop, loss P% or delay D, or reject, loss ge p=P r=P, duplicate P%, reorder P%, corrupt P%, rate R, rst-at-seq=N"

const keyList = "dir, port, flags, match, flow, conn, flows, after-bytes, nth, every, after, for, until, count, " +
	"and per action jitter, gap, queue, p, r, h, k"

// ParseSpec parses one rule in the grammar documented in docs/fault-rules.md:
//
//	drop | reject | loss P% | loss ge p=P r=P [h=P] [k=P] | delay D [jitter=J]
//	  | duplicate [P%] | reorder [P%] [gap=K] | corrupt [P%] | rate R [queue=SIZE]
//	  | rst-at-seq=N
//	  [dir=in|out|both] [port=N] [flags=syn|fin|rst|ack-only|data[,...]]
//	  [match=CLASS[,...]] [flow=HOST:PORT] [conn=N] [flows=existing|new]
//	  [after-bytes=SIZE] [nth=K | every=K]
//	  [after=D|established|bytes:SIZE] [for=D|rtos:N] [until=rto:N] [count=N]
func ParseSpec(s string) (Spec, error) {
	fields := strings.Fields(s)
	bad := func(tok, reason string) (Spec, error) {
		return Spec{}, &SpecError{Spec: s, Token: tok, Reason: reason}
	}
	if len(fields) == 0 {
		return bad("", "empty spec; start with an action: "+actionList)
	}
	sp := Spec{Dir: packet.Both}
	rest := fields[1:]
	// takeArg removes and returns the positional argument after the action,
	// if there is one.
	takeArg := func() (string, bool) {
		if len(rest) == 0 || strings.Contains(rest[0], "=") {
			return "", false
		}
		arg := rest[0]
		rest = rest[1:]
		return arg, true
	}
	act, actVal, hasVal := strings.Cut(fields[0], "=")
	if hasVal && act != "rst-at-seq" {
		return bad(fields[0], "unknown action; use "+actionList)
	}
	switch act {
	case "drop":
		sp.Action = ActDrop
	case "reject":
		sp.Action = ActReject
	case "rst-at-seq":
		n, err := units.ParseSize(actVal)
		if !hasVal || err != nil || n < 1 || n > math.MaxUint32 {
			return bad(fields[0], "rst-at-seq needs a relative sequence number 1-4294967295, e.g. rst-at-seq=100000")
		}
		sp.Action, sp.Seq = ActRSTAtSeq, uint32(n)
	case "loss":
		arg, ok := takeArg()
		if !ok {
			return bad(fields[0], "needs a probability, e.g. loss 20%, or a burst model, e.g. loss ge p=1% r=30%")
		}
		if arg == "ge" {
			sp.Action = ActBurstLoss
			sp.GE = GilbertElliott{P: -1, R: -1, H: -1, K: -1}
			break
		}
		p, err := parsePercent(arg)
		if err != nil {
			return bad(arg, "loss "+err.Error())
		}
		sp.Action, sp.Loss = ActLoss, p
	case "delay":
		arg, ok := takeArg()
		if !ok {
			return bad(fields[0], "needs a duration, e.g. delay 150ms")
		}
		d, err := time.ParseDuration(arg)
		if err != nil || d <= 0 {
			return bad(arg, "delay must be a positive duration such as 150ms")
		}
		sp.Action, sp.Delay = ActDelay, d
	case "duplicate", "reorder", "corrupt":
		sp.Action = map[string]Action{"duplicate": ActDuplicate, "reorder": ActReorder, "corrupt": ActCorrupt}[act]
		sp.Prob = 1
		if arg, ok := takeArg(); ok {
			p, err := parsePercent(arg)
			if err != nil {
				return bad(arg, act+" "+err.Error())
			}
			sp.Prob = p
		}
	case "rate":
		arg, ok := takeArg()
		if !ok {
			return bad(fields[0], "needs a rate, e.g. rate 1mbit or rate 125000 (bytes/s)")
		}
		r, err := parseRate(arg)
		if err != nil {
			return bad(arg, err.Error())
		}
		sp.Action, sp.Rate = ActRate, r
	default:
		return bad(fields[0], "unknown action; use "+actionList)
	}
	seen := map[string]bool{}
	for _, tok := range rest {
		key, val, ok := strings.Cut(tok, "=")
		if !ok || val == "" {
			return bad(tok, "expected key=value ("+keyList+")")
		}
		if key == "for" && strings.HasPrefix(val, "rtos:") {
			key = "until" // for=rtos:N is another spelling of until=rto:N
		}
		if seen[key] {
			return bad(tok, "given twice")
		}
		seen[key] = true
		if err := sp.set(key, val); err != nil {
			return bad(tok, err.Error())
		}
	}
	if sp.Action == ActBurstLoss {
		ge := &sp.GE
		if ge.P < 0 {
			return bad("ge", "the burst loss model needs p=P, the chance to enter the loss burst, e.g. loss ge p=1% r=30%")
		}
		if ge.R < 0 {
			ge.R = 1 - ge.P
		}
		if ge.H < 0 {
			ge.H = 0
		}
		if ge.K < 0 {
			ge.K = 1
		}
	}
	if sp.Nth > 0 && sp.Every > 0 {
		return bad("every="+strconv.Itoa(sp.Every), "nth and every exclude each other")
	}
	return sp, nil
}

func (sp *Spec) set(key, val string) error {
	onlyFor := func(a Action) error {
		if sp.Action != a {
			return fmt.Errorf("%s only applies to %s", key, a)
		}
		return nil
	}
	switch key {
	case "dir":
		switch val {
		case "in":
			sp.Dir = packet.In
		case "out":
			sp.Dir = packet.Out
		case "both":
			sp.Dir = packet.Both
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
		c, bad := parseNames(val, classNames)
		if bad != "" {
			return fmt.Errorf("unknown flag class %q; use syn, fin, rst, ack-only or data", bad)
		}
		sp.Flags |= c
	case "match":
		m, err := parseMatch(val)
		if err != nil {
			return err
		}
		sp.Match = m
	case "flow":
		ap, err := netip.ParseAddrPort(val)
		if err != nil || ap.Port() == 0 {
			return fmt.Errorf("flow must be one end of a connection as HOST:PORT, e.g. flow=198.18.0.1:40000 or flow=[fd00:198:18::1]:40000")
		}
		sp.Flow = netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
	case "conn", "nth", "every", "count":
		n, err := strconv.Atoi(val)
		if err != nil || n <= 0 {
			return fmt.Errorf("%s must be a positive integer", key)
		}
		switch key {
		case "conn":
			sp.Conn = n
		case "nth":
			sp.Nth = n
		case "every":
			sp.Every = n
		default:
			sp.Count = n
		}
	case "flows":
		switch val {
		case "existing":
			sp.Flows = FlowsExisting
		case "new":
			sp.Flows = FlowsNew
		default:
			return fmt.Errorf("flows must be existing (open when the rule starts) or new (opened later)")
		}
	case "after-bytes":
		n, err := units.ParseSize(val)
		if err != nil || n <= 0 {
			return fmt.Errorf("after-bytes must be a positive size such as 1000000 or 1MB")
		}
		sp.AfterBytes = n
	case "after":
		switch {
		case val == "established":
			sp.AfterEstablished = true
		case strings.HasPrefix(val, "bytes:"):
			n, err := units.ParseSize(strings.TrimPrefix(val, "bytes:"))
			if err != nil || n <= 0 {
				return fmt.Errorf("after=bytes:N needs a positive size such as bytes:1MB")
			}
			sp.AfterFlowBytes = n
		default:
			d, err := time.ParseDuration(val)
			if err != nil || d < 0 {
				return fmt.Errorf("after must be a duration such as 3s, established, or bytes:N")
			}
			sp.After = d
		}
	case "for", "jitter":
		d, err := time.ParseDuration(val)
		if err != nil || d < 0 || (key == "for" && d == 0) {
			if key == "for" {
				return fmt.Errorf("for must be a positive duration such as 3s or 250ms, or rtos:N")
			}
			return fmt.Errorf("jitter must be a duration such as 20ms")
		}
		if key == "for" {
			sp.For = d
			break
		}
		if err := onlyFor(ActDelay); err != nil {
			return err
		}
		sp.Jitter = d
	case "until":
		num, ok := strings.CutPrefix(val, "rto:")
		if !ok {
			num, ok = strings.CutPrefix(val, "rtos:")
		}
		n, err := strconv.Atoi(num)
		if !ok || err != nil || n <= 0 {
			return fmt.Errorf("until must be rto:N (heal a connection at its Nth retransmission), N positive")
		}
		sp.UntilRTO = n
	case "gap":
		if err := onlyFor(ActReorder); err != nil {
			return err
		}
		n, err := strconv.Atoi(val)
		if err != nil || n <= 0 || n > MaxReorderGap {
			return fmt.Errorf("gap must be 1-%d packets", MaxReorderGap)
		}
		sp.Gap = n
	case "queue":
		if err := onlyFor(ActRate); err != nil {
			return err
		}
		n, err := units.ParseSize(val)
		if err != nil || n <= 0 {
			return fmt.Errorf("queue must be a positive size such as 64KiB or 100000")
		}
		sp.Queue = n
	case "p", "r", "h", "k":
		if err := onlyFor(ActBurstLoss); err != nil {
			return err
		}
		p, err := parseProb(val)
		if err != nil {
			return fmt.Errorf("%s %w", key, err)
		}
		if key == "p" && p == 0 {
			return fmt.Errorf("p must be above 0, or the loss burst never starts")
		}
		*map[string]*float64{"p": &sp.GE.P, "r": &sp.GE.R, "h": &sp.GE.H, "k": &sp.GE.K}[key] = p
	default:
		return fmt.Errorf("unknown key %q; use %s", key, keyList)
	}
	return nil
}

// parsePercent parses "P%" with P in (0, 100] into a probability.
func parsePercent(s string) (float64, error) {
	num, ok := strings.CutSuffix(s, "%")
	if !ok {
		return 0, fmt.Errorf("needs a percentage such as 20%%")
	}
	p, err := strconv.ParseFloat(num, 64)
	if err != nil || !(p > 0 && p <= 100) {
		return 0, fmt.Errorf("must be a percentage in (0, 100]")
	}
	return p / 100, nil
}

// parseProb parses a probability written as a percentage ("30%") or a
// fraction ("0.3"), in [0, 1].
func parseProb(s string) (float64, error) {
	if num, ok := strings.CutSuffix(s, "%"); ok {
		p, err := strconv.ParseFloat(num, 64)
		if err != nil || !(p >= 0 && p <= 100) {
			return 0, fmt.Errorf("must be a percentage in [0, 100] or a fraction in [0, 1]")
		}
		return p / 100, nil
	}
	p, err := strconv.ParseFloat(s, 64)
	if err != nil || !(p >= 0 && p <= 1) {
		return 0, fmt.Errorf("must be a percentage in [0, 100] or a fraction in [0, 1]")
	}
	return p, nil
}

// formatPercent writes probability p as a percentage that parses back to
// exactly p, or as a fraction if no short percentage does.
func formatPercent(p float64, fractionOK bool) string {
	x := p * 100
	for _, c := range []float64{x, math.Nextafter(x, 0), math.Nextafter(x, 200),
		math.Nextafter(math.Nextafter(x, 0), 0), math.Nextafter(math.Nextafter(x, 200), 200)} {
		for _, prec := range []int{-1, 15, 16, 17} {
			s := strconv.FormatFloat(c, 'g', prec, 64)
			if v, err := strconv.ParseFloat(s, 64); err == nil && v/100 == p {
				return s + "%"
			}
		}
	}
	if fractionOK {
		return strconv.FormatFloat(p, 'g', -1, 64)
	}
	return strconv.FormatFloat(x, 'g', -1, 64) + "%"
}

// rateUnits are the suffixes parseRate accepts, in bits per second.
var rateUnits = []struct {
	suffix string
	mult   float64
}{
	{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1},
}

// parseRate parses a rate: N bytes per second, or N followed by bit, kbit,
// mbit or gbit (bits per second, decimal prefixes). It returns bits/s.
func parseRate(s string) (uint64, error) {
	mult, num := 8.0, s
	for _, u := range rateUnits {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			mult, num = u.mult, n
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	bits := v * mult
	if err != nil || !(bits >= 1) || bits > 1e12 || bits != math.Trunc(bits) {
		return 0, fmt.Errorf("rate must be a positive whole number of bits per second up to 1000gbit: 1mbit, 512kbit, or bytes per second such as 125000")
	}
	return uint64(bits), nil
}

// formatRate writes bits/s with the largest unit that divides it.
func formatRate(bits uint64) string {
	for _, u := range rateUnits {
		m := uint64(u.mult)
		if bits%m == 0 {
			return strconv.FormatUint(bits/m, 10) + u.suffix
		}
	}
	return strconv.FormatUint(bits, 10) + "bit"
}

// String renders the spec back in canonical grammar; ParseSpec(s.String())
// yields s again.
func (sp Spec) String() string {
	var b strings.Builder
	kv := func(k, v string) { b.WriteString(" " + k + "=" + v) }
	itoa := func(n int64) string { return strconv.FormatInt(n, 10) }
	switch sp.Action {
	case ActRSTAtSeq:
		b.WriteString("rst-at-seq=" + strconv.FormatUint(uint64(sp.Seq), 10))
	default:
		b.WriteString(sp.Action.String())
	}
	switch sp.Action {
	case ActLoss:
		b.WriteString(" " + formatPercent(sp.Loss, false))
	case ActDelay:
		b.WriteString(" " + sp.Delay.String())
		if sp.Jitter > 0 {
			kv("jitter", sp.Jitter.String())
		}
	case ActDuplicate, ActReorder, ActCorrupt:
		b.WriteString(" " + formatPercent(sp.Prob, false))
		if sp.Gap > 0 {
			kv("gap", itoa(int64(sp.Gap)))
		}
	case ActRate:
		b.WriteString(" " + formatRate(sp.Rate))
		if sp.Queue > 0 {
			kv("queue", itoa(sp.Queue))
		}
	case ActBurstLoss:
		kv("p", formatPercent(sp.GE.P, true))
		kv("r", formatPercent(sp.GE.R, true))
		kv("h", formatPercent(sp.GE.H, true))
		kv("k", formatPercent(sp.GE.K, true))
	}
	if sp.Dir != packet.Both && sp.Dir != 0 {
		kv("dir", sp.Dir.String())
	}
	if sp.Port != 0 {
		kv("port", itoa(int64(sp.Port)))
	}
	if sp.Flags != 0 {
		kv("flags", sp.Flags.String())
	}
	if sp.Match != 0 {
		kv("match", sp.Match.String())
	}
	if sp.Flow.IsValid() {
		kv("flow", sp.Flow.String())
	}
	if sp.Conn > 0 {
		kv("conn", itoa(int64(sp.Conn)))
	}
	if sp.Flows != 0 {
		kv("flows", sp.Flows.String())
	}
	if sp.AfterBytes > 0 {
		kv("after-bytes", itoa(sp.AfterBytes))
	}
	if sp.Nth > 0 {
		kv("nth", itoa(int64(sp.Nth)))
	}
	if sp.Every > 0 {
		kv("every", itoa(int64(sp.Every)))
	}
	switch {
	case sp.AfterEstablished:
		kv("after", "established")
	case sp.AfterFlowBytes > 0:
		kv("after", "bytes:"+itoa(sp.AfterFlowBytes))
	case sp.After > 0:
		kv("after", sp.After.String())
	}
	if sp.For > 0 {
		kv("for", sp.For.String())
	}
	if sp.UntilRTO > 0 {
		kv("until", "rto:"+itoa(int64(sp.UntilRTO)))
	}
	if sp.Count > 0 {
		kv("count", itoa(int64(sp.Count)))
	}
	return b.String()
}

// needsFlow reports whether the rule selects by connection state, so the
// controller must track the connections in its scope.
func (sp *Spec) needsFlow() bool {
	return sp.Match&matchStateful != 0 || sp.AfterBytes > 0 || sp.Conn > 0 || sp.Flows != 0 ||
		sp.AfterEstablished || sp.AfterFlowBytes > 0 || sp.UntilRTO > 0 || sp.Action == ActRSTAtSeq
}

// tcpOnly reports whether the rule can only ever select TCP segments.
func (sp *Spec) tcpOnly() bool {
	return sp.Match != 0 || sp.needsFlow()
}
