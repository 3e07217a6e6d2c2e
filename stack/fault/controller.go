package fault

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/unplug-dev/unplug/internal/flow"
	"github.com/unplug-dev/unplug/internal/packet"
)

// MaxRuleFlows bounds the connections one rule keeps state for (until=,
// rst-at-seq=): beyond it, the least recently active are forgotten.
const MaxRuleFlows = 4096

// Rule is an installed fault rule with its counters. Counters are updated on
// the packet path with atomics; read them through Status.
type Rule struct {
	ID   int
	Spec Spec

	start, end tcpip.MonotonicTime // active window; end zero = open-ended
	startStamp int64               // start as a flow tracker timestamp
	stateful   bool                // selects by connection state (Spec.needsFlow)
	tracks     bool                // needs the flow tracker: stateful, or a seq-keyed loss
	tcpOnly    bool
	pureMatch  bool          // Spec.Match needs no connection state
	notes      [noteN]string // precomputed capture comments

	matched, dropped, delayed atomic.Uint64
	rejected, reset           atomic.Uint64
	duplicated, reordered     atomic.Uint64
	corrupted, tailDropped    atomic.Uint64
	healed                    atomic.Uint64
	acted                     atomic.Int64 // packets acted on, for Count
	selected                  atomic.Int64 // packets selected, for Nth and Every

	// mu guards the per-connection and per-direction state below, used by
	// stateful, rate and burst-loss rules only.
	mu        sync.Mutex
	flows     flow.Table[flow.Key, ruleFlow]
	conns     int // connections opened in scope since the rule started (conn=)
	target    flow.Key
	hasTarget bool
	nextFree  [2]tcpip.MonotonicTime // rate: when each direction's queue drains
	bad       [2]bool                // burst loss: each direction's chain is in the Bad state
	lossConns uint32                 // loss: TCP connections numbered so far
}

// ruleFlow is what a rule remembers of one connection.
type ruleFlow struct {
	started bool      // the rule matched a segment of it
	ordinal uint32    // loss: the connection's number in the order the rule first saw them
	others  [2]uint32 // loss: per direction, segments judged that carry no new sequence space
	base    uint32    // its retransmissions (in the rule's directions) before that
	healed  bool      // until=rto reached: the rule leaves it alone
	fired   [2]bool   // rst-at-seq sent, per direction
}

// Capture comments a rule precomputes, one per kind of decision.
const (
	noteDrop = iota
	noteDelay
	noteReject
	noteReset
	noteDuplicate
	noteCorrupt
	noteReorder
	noteTailDrop
	noteInjectRST
	noteInjectCopy
	noteN
)

// RuleStatus is a snapshot of a rule for `unplug fault list` and reports.
type RuleStatus struct {
	ID      int    `json:"id"`
	Spec    string `json:"spec"`
	State   string `json:"state"` // pending, active or expired
	Matched uint64 `json:"matched"`
	// Dropped counts packets that did not reach their receiver because of
	// the rule: dropped, lost, rejected, replaced by a RST, corrupted or
	// tail-dropped. Delayed counts packets it held back.
	Dropped uint64 `json:"dropped"`
	Delayed uint64 `json:"delayed"`
	// Action-specific counts, omitted when zero.
	Rejected    uint64 `json:"rejected,omitempty"`     // reject: segments answered with a RST
	Reset       uint64 `json:"reset,omitempty"`        // rst-at-seq: segments replaced by a RST
	Duplicated  uint64 `json:"duplicated,omitempty"`   // duplicate: copies sent
	Reordered   uint64 `json:"reordered,omitempty"`    // reorder: packets held back
	Corrupted   uint64 `json:"corrupted,omitempty"`    // corrupt: packets sent with a bad checksum
	TailDropped uint64 `json:"tail_dropped,omitempty"` // rate: packets the full queue refused
	Healed      uint64 `json:"healed,omitempty"`       // until=rto: connections the rule let go
	// StartsIn and EndsIn are relative to the snapshot (negative = past);
	// EndsIn is omitted for open-ended rules.
	StartsIn time.Duration  `json:"starts_in_ns"`
	EndsIn   *time.Duration `json:"ends_in_ns,omitempty"`
}

// Controller holds the fault rules and decides each packet's fate. Decide is
// lock-free and allocation-free for packets no rule selects, so it can sit on
// the packet path; Add, Remove and Clear copy the rule list. Rules that
// select by connection state make the controller follow the connections in
// their scope (their port= and flow=) with a bounded flow.Tracker, under a
// lock, only while such a rule is installed.
type Controller struct {
	clock    tcpip.Clock
	rules    atomic.Pointer[[]*Rule]
	rng      atomic.Uint64 // splitmix64 state: deterministic for a given seed
	seed     uint64        // the seed itself, for keyed draws (lossDraw)
	stateful atomic.Int32  // installed rules with Rule.tracks

	flowMu  sync.Mutex
	tracker *flow.Tracker // nil while no stateful rule is installed

	mu     sync.Mutex // serializes writers
	nextID int
}

// NewController returns a controller with no rules, timing rules on clock and
// drawing every random choice from seed. A loss rule's decision for a TCP
// segment is a hash of the seed, the rule, the connection's number (in the
// order the rule first saw connections), the direction, the segment's
// relative sequence number, length and SYN/FIN/RST flags, and which
// transmission of the connection's direction it is (see lossDraw): the
// same seed loses the same first transmissions whatever the timing and
// however the connections' packets interleave, and every retransmission
// gets a fresh draw. Other random choices (jitter, duplicate, reorder,
// corrupt, burst loss, loss of non-TCP packets) come from one generator
// seeded with seed, so a run with the same seed and packet order makes the
// same decisions.
func NewController(clock tcpip.Clock, seed uint64) *Controller {
	c := &Controller{clock: clock, nextID: 1, seed: seed}
	c.rng.Store(seed)
	c.rules.Store(&[]*Rule{})
	return c
}

// Clock returns the clock rules are scheduled on.
func (c *Controller) Clock() tcpip.Clock { return c.clock }

// stamp converts a monotonic time to a flow tracker timestamp, never 0.
func stamp(t tcpip.MonotonicTime) int64 { return int64(t.Sub(tcpip.MonotonicTime{})) + 1 }

// Add installs a rule; its after= and for= count from now. It returns the
// rule's id. A zero Dir is stored as Both, so a literal Spec{Action: ActDrop}
// drops everything, as the zero selectors promise.
func (c *Controller) Add(sp Spec) int {
	if sp.Dir == 0 {
		sp.Dir = packet.Both
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	r := &Rule{ID: c.nextID, Spec: sp}
	c.nextID++
	r.start = c.clock.NowMonotonic().Add(sp.After)
	r.startStamp = stamp(r.start)
	if sp.For > 0 {
		r.end = r.start.Add(sp.For)
	}
	r.stateful = sp.needsFlow()
	r.tracks = r.stateful || sp.Action == ActLoss
	r.tcpOnly = sp.tcpOnly()
	r.pureMatch = sp.Match&matchStateful == 0
	r.initNotes()
	if r.tracks || sp.Action == ActRate || sp.Action == ActBurstLoss {
		r.flows = flow.NewTable[flow.Key, ruleFlow](MaxRuleFlows)
	}
	if r.tracks {
		c.flowMu.Lock()
		if c.tracker == nil {
			c.tracker = flow.NewTracker(flow.DefaultMaxConns)
		}
		c.flowMu.Unlock()
		c.stateful.Add(1)
	}
	old := *c.rules.Load()
	rules := append(old[:len(old):len(old)], r)
	c.rules.Store(&rules)
	return r.ID
}

func (r *Rule) initNotes() {
	n := func(format string) string { return fmt.Sprintf(format, r.ID, r.Spec) }
	r.notes = [noteN]string{
		noteDrop:       n("dropped by rule %d: %s"),
		noteDelay:      n("delayed by rule %d: %s"),
		noteReject:     n("rejected by rule %d (answered with a RST): %s"),
		noteReset:      n("replaced by a RST by rule %d: %s"),
		noteDuplicate:  n("duplicated by rule %d: %s"),
		noteCorrupt:    n("corrupted by rule %d (bad checksum: the receiver drops it): %s"),
		noteReorder:    n("held back by rule %d: %s"),
		noteTailDrop:   n("tail-dropped by rule %d (rate queue full): %s"),
		noteInjectRST:  n("RST sent by rule %d: %s"),
		noteInjectCopy: n("copy sent by rule %d: %s"),
	}
}

// note returns the comment for a decision this rule took.
func (r *Rule) note(d Decision) string {
	switch {
	case d.Verdict == Injected && d.Action == ActDuplicate:
		return r.notes[noteInjectCopy]
	case d.Verdict == Injected:
		return r.notes[noteInjectRST]
	}
	switch d.Action {
	case ActReject:
		return r.notes[noteReject]
	case ActRSTAtSeq:
		return r.notes[noteReset]
	case ActDuplicate:
		return r.notes[noteDuplicate]
	case ActCorrupt:
		return r.notes[noteCorrupt]
	case ActReorder:
		return r.notes[noteReorder]
	case ActRate:
		if d.Verdict == Dropped {
			return r.notes[noteTailDrop]
		}
	}
	if d.Verdict == Dropped {
		return r.notes[noteDrop]
	}
	return r.notes[noteDelay]
}

// AddString parses spec and installs it.
func (c *Controller) AddString(spec string) (int, error) {
	sp, err := ParseSpec(spec)
	if err != nil {
		return 0, err
	}
	return c.Add(sp), nil
}

// Remove deletes the rule with the given id.
func (c *Controller) Remove(id int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.rules.Load()
	rules := make([]*Rule, 0, len(old))
	for _, r := range old {
		if r.ID != id {
			rules = append(rules, r)
		}
	}
	if len(rules) == len(old) {
		return fmt.Errorf("no fault rule with id %d (see `unplug fault list`)", id)
	}
	c.install(rules)
	return nil
}

// Clear removes every rule and returns how many there were.
func (c *Controller) Clear() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(*c.rules.Load())
	c.install([]*Rule{})
	return n
}

// install replaces the rule list; with no stateful rule left, the flow
// tracker and its memory go.
func (c *Controller) install(rules []*Rule) {
	var n int32
	for _, r := range rules {
		if r.tracks {
			n++
		}
	}
	c.stateful.Store(n)
	c.rules.Store(&rules)
	if n == 0 {
		c.flowMu.Lock()
		c.tracker = nil
		c.flowMu.Unlock()
	}
}

// TrackedConns returns how many connections the controller follows for its
// stateful rules (0 when none is installed).
func (c *Controller) TrackedConns() int {
	c.flowMu.Lock()
	defer c.flowMu.Unlock()
	if c.tracker == nil {
		return 0
	}
	return c.tracker.Len()
}

// Status returns a snapshot of every rule in installation order.
func (c *Controller) Status() []RuleStatus {
	now := c.clock.NowMonotonic()
	rules := *c.rules.Load()
	out := make([]RuleStatus, 0, len(rules))
	for _, r := range rules {
		st := RuleStatus{
			ID: r.ID, Spec: r.Spec.String(), State: r.state(now),
			Matched:     r.matched.Load(),
			Dropped:     r.dropped.Load(),
			Delayed:     r.delayed.Load(),
			Rejected:    r.rejected.Load(),
			Reset:       r.reset.Load(),
			Duplicated:  r.duplicated.Load(),
			Reordered:   r.reordered.Load(),
			Corrupted:   r.corrupted.Load(),
			TailDropped: r.tailDropped.Load(),
			Healed:      r.healed.Load(),
			StartsIn:    r.start.Sub(now),
		}
		if r.end != (tcpip.MonotonicTime{}) {
			d := r.end.Sub(now)
			st.EndsIn = &d
		}
		out = append(out, st)
	}
	return out
}

func (r *Rule) state(now tcpip.MonotonicTime) string {
	switch {
	case now.Before(r.start):
		return "pending"
	case r.expired(now):
		return "expired"
	}
	return "active"
}

func (r *Rule) expired(now tcpip.MonotonicTime) bool {
	if r.end != (tcpip.MonotonicTime{}) && !now.Before(r.end) {
		return true
	}
	if r.Spec.Nth > 0 && r.selected.Load() >= int64(r.Spec.Nth) {
		return true
	}
	return r.Spec.Count > 0 && r.acted.Load() >= int64(r.Spec.Count)
}

// inScope reports whether p belongs to a connection a stateful rule follows:
// a TCP segment on its port and flow, whatever its direction and flags.
func (r *Rule) inScope(p *packet.Packet) bool {
	sp := &r.Spec
	if p.Proto != packet.ProtoTCP || p.Version == 0 {
		return false
	}
	if sp.Port != 0 && p.Port() != sp.Port {
		return false
	}
	return !sp.Flow.IsValid() || hasEnd(p, sp)
}

// hasEnd reports whether either end of p is sp.Flow.
func hasEnd(p *packet.Packet, sp *Spec) bool {
	return (p.SrcPort == sp.Flow.Port() && p.Src == sp.Flow.Addr()) ||
		(p.DstPort == sp.Flow.Port() && p.Dst == sp.Flow.Addr())
}

// matches reports whether the rule's stateless selectors accept p.
func (r *Rule) matches(p *packet.Packet) bool {
	sp := &r.Spec
	if sp.Dir&p.Dir == 0 {
		return false
	}
	// A later fragment has no transport header: rules that look at one
	// leave it alone. Its datagram's fate is the first fragment's, which
	// they judge (reassembly fails without it).
	if p.Fragment == packet.LaterFragment && (r.tcpOnly || sp.Port != 0 || sp.Flow.IsValid() || sp.Flags != 0 || sp.Match != 0) {
		return false
	}
	if r.tcpOnly && (p.Proto != packet.ProtoTCP || p.Version == 0) {
		return false
	}
	if sp.Port != 0 && (p.Version == 0 || p.Port() != sp.Port) {
		return false
	}
	if sp.Flow.IsValid() && (p.Version == 0 || !hasEnd(p, sp)) {
		return false
	}
	if sp.Flags != 0 && Classes(p)&sp.Flags == 0 {
		return false
	}
	return sp.Match == 0 || !r.pureMatch || Meaning(p)&sp.Match != 0
}

// inDirs reports whether d is among the rule's directions.
func (r *Rule) inDirs(d packet.Direction) bool { return r.Spec.Dir&d != 0 }

// sumDirs adds up per-direction counts (indexed Dir-1) over the rule's
// directions.
func sumDirs[T uint32 | uint64](r *Rule, v [2]T) T {
	var n T
	if r.inDirs(packet.In) {
		n += v[0]
	}
	if r.inDirs(packet.Out) {
		n += v[1]
	}
	return n
}

// countConn counts a connection opened in the rule's scope, for conn=N.
func (r *Rule) countConn(k flow.Key) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conns++
	if r.conns == r.Spec.Conn {
		r.target, r.hasTarget = k, true
	}
}

// matchesFlow reports whether the rule's stateful selectors accept p, whose
// connection the tracker described in fi.
func (r *Rule) matchesFlow(p *packet.Packet, fi *flow.Info) bool {
	sp := &r.Spec
	if sp.Match != 0 && !r.pureMatch && (Meaning(p)|flowMeaning(fi))&sp.Match == 0 {
		return false
	}
	if sp.Conn > 0 {
		r.mu.Lock()
		ok := r.hasTarget && r.target == fi.Key
		r.mu.Unlock()
		if !ok {
			return false
		}
	}
	if sp.Flows != 0 {
		existing := fi.Born == 0 || fi.Born < r.startStamp
		if existing != (sp.Flows == FlowsExisting) {
			return false
		}
	}
	if sp.AfterBytes > 0 && !beyond(p, fi, uint64(sp.AfterBytes)) {
		return false
	}
	if sp.AfterEstablished && !fi.Established {
		return false
	}
	if sp.AfterFlowBytes > 0 {
		before := sumDirs(r, fi.Bytes)
		if r.inDirs(p.Dir) {
			before -= uint64(fi.NewBytes)
		}
		if before < uint64(sp.AfterFlowBytes) {
			return false
		}
	}
	if sp.UntilRTO > 0 {
		rtx := sumDirs(r, fi.Retrans)
		r.mu.Lock()
		defer r.mu.Unlock()
		rf, _ := r.flows.Get(fi.Key)
		if !rf.started {
			rf.started, rf.base = true, rtx
			if fi.Kind == flow.KindRetransmit && r.inDirs(p.Dir) {
				rf.base-- // this retransmission counts
			}
		}
		if !rf.healed && rtx-rf.base >= uint32(sp.UntilRTO) {
			rf.healed = true
			r.healed.Add(1)
		}
		r.flows.Put(fi.Key, rf)
		if rf.healed {
			return false
		}
	}
	return true
}

// beyond reports whether segment p carries stream bytes past the first n
// (or, without payload, was sent after them).
func beyond(p *packet.Packet, fi *flow.Info, n uint64) bool {
	rel := uint64(fi.RelSeq)
	if p.PayloadLen > 0 {
		return rel+uint64(p.PayloadLen)-1 > n
	}
	return rel > n
}

// reaches reports whether segment p carries relative sequence number n or
// later: the segment a rst-at-seq=n rule replaces.
func reaches(p *packet.Packet, fi *flow.Info, n uint32) bool {
	rel := uint64(fi.RelSeq)
	if p.PayloadLen > 0 && rel+uint64(p.PayloadLen)-1 >= uint64(n) {
		return true
	}
	return p.Flags&packet.FlagFIN != 0 && rel >= uint64(n)
}

// dirIndex maps In to 0 and Out to 1.
func dirIndex(d packet.Direction) int {
	if d == packet.Out {
		return 1
	}
	return 0
}

// Concerns reports whether any rule could decide, count or track a
// segment of p's connection travelling in p's direction at this instant.
// It reads only what every segment of one TCP super-packet shares (the
// direction, the addresses and ports), so false means Decide would pass
// each of them, whatever its sequence number, flags or length, and change
// nothing: a batch is then judged once instead of segment by segment.
func (c *Controller) Concerns(p *packet.Packet) bool {
	rules := *c.rules.Load()
	if len(rules) == 0 {
		return false
	}
	now := c.clock.NowMonotonic()
	for _, r := range rules {
		if r.concerns(p, now) {
			return true
		}
	}
	return false
}

// concerns is Concerns for one rule: false only when Decide would skip r
// for every segment sharing p's direction, addresses and ports.
func (r *Rule) concerns(p *packet.Packet, now tcpip.MonotonicTime) bool {
	if r.expired(now) {
		return false
	}
	if r.tracks && r.inScope(p) {
		return true // the tracker sees every segment in its scope
	}
	sp := &r.Spec
	switch {
	case now.Before(r.start), sp.Dir&p.Dir == 0:
		return false
	case r.tcpOnly && (p.Proto != packet.ProtoTCP || p.Version == 0):
		return false
	case sp.Port != 0 && (p.Version == 0 || p.Port() != sp.Port):
		return false
	case sp.Flow.IsValid() && (p.Version == 0 || !hasEnd(p, sp)):
		return false
	}
	return true
}

// Decide returns the fate of packet p: the first active rule whose selectors
// match and whose action fires decides it. Every active matching rule counts
// the packet as matched, up to and including the deciding one.
func (c *Controller) Decide(p *packet.Packet) Decision {
	rules := *c.rules.Load()
	if len(rules) == 0 {
		return Decision{}
	}
	now := c.clock.NowMonotonic()
	// Stateful rules need the tracker to see every segment of the
	// connections in their scope, whichever rule decides it.
	var fi *flow.Info
	var info flow.Info
	if c.stateful.Load() > 0 && p.Proto == packet.ProtoTCP && p.Version != 0 && p.Fragment != packet.LaterFragment {
		for _, r := range rules {
			if r.tracks && !r.expired(now) && r.inScope(p) {
				info, fi = c.track(p, now), &info
				break
			}
		}
	}
	for _, r := range rules {
		if now.Before(r.start) || r.expired(now) {
			continue
		}
		if r.stateful {
			if fi == nil || !r.inScope(p) {
				continue
			}
			if r.Spec.Conn > 0 && fi.Opened {
				r.countConn(fi.Key)
			}
		}
		if !r.matches(p) || (r.stateful && !r.matchesFlow(p, fi)) {
			continue
		}
		r.matched.Add(1)
		sp := &r.Spec
		if sp.Nth > 0 || sp.Every > 0 {
			n := r.selected.Add(1)
			if (sp.Nth > 0 && n != int64(sp.Nth)) || (sp.Every > 0 && n%int64(sp.Every) != 0) {
				continue
			}
		}
		d, ok := c.act(r, p, fi, now)
		if ok {
			return d
		}
	}
	return Decision{}
}

// act applies r's action to p; false when the action does not fire (a
// probability not met, Count used up, a reset already sent).
func (c *Controller) act(r *Rule, p *packet.Packet, fi *flow.Info, now tcpip.MonotonicTime) (Decision, bool) {
	sp := &r.Spec
	d := Decision{Rule: r.ID, Action: sp.Action}
	switch sp.Action {
	case ActLoss:
		if c.lossDraw(r, p, fi) >= sp.Loss {
			return d, false
		}
		d.Verdict = Dropped
	case ActBurstLoss:
		if !r.burstLost(c, p.Dir) {
			return d, false
		}
		d.Verdict = Dropped
	case ActDrop:
		d.Verdict = Dropped
	case ActReject:
		d.Verdict = Dropped
	case ActRSTAtSeq:
		if fi == nil || !reaches(p, fi, sp.Seq) || !r.fire(fi.Key, p.Dir) {
			return d, false
		}
		d.Verdict = Dropped
	case ActDelay:
		d.Verdict, d.Delay = Delayed, sp.Delay
		if sp.Jitter > 0 {
			d.Delay += time.Duration(c.random() * float64(sp.Jitter))
		}
	case ActDuplicate, ActCorrupt, ActReorder:
		if c.random() >= sp.Prob {
			return d, false
		}
		switch sp.Action {
		case ActDuplicate:
			d.Verdict = Pass
		case ActCorrupt:
			d.Verdict, d.Arg = Dropped, int(c.next()>>33)
		default:
			d.Verdict, d.Arg = Delayed, max(sp.Gap, 1)
		}
	case ActRate:
		delay, ok := r.pace(p, now)
		if !ok {
			if !r.take() {
				return d, false
			}
			r.tailDropped.Add(1)
			r.dropped.Add(1)
			d.Verdict = Dropped
			return d, true
		}
		d.Verdict, d.Delay = Delayed, delay
	default:
		return d, false
	}
	if !r.take() {
		return d, false
	}
	switch d.Verdict {
	case Dropped:
		r.dropped.Add(1)
	case Delayed:
		r.delayed.Add(1)
	}
	switch sp.Action {
	case ActReject:
		r.rejected.Add(1)
	case ActRSTAtSeq:
		r.reset.Add(1)
	case ActDuplicate:
		r.duplicated.Add(1)
	case ActCorrupt:
		r.corrupted.Add(1)
	case ActReorder:
		r.reordered.Add(1)
	}
	return d, true
}

// lossDraw returns a loss rule's uniform draw in [0, 1) for p. For a TCP
// segment the flow tracker followed (fi) it is a hash of the seed, the
// rule, the connection's number, the direction, the relative sequence
// number, the payload length, the SYN/FIN/RST flags and which transmission
// of the connection's direction this is:
//
//   - a first transmission (new data, SYN or FIN) is transmission 0, so its
//     fate depends on the segment alone, whatever the timing and whatever
//     else the link carries;
//   - a retransmission is numbered by the connection's retransmissions in
//     that direction so far (flow.Info.Retrans), which only grows, so
//     every resend of a segment gets a fresh draw;
//   - anything else (pure ACKs, probes) is numbered by how many such
//     segments the rule judged in that direction of the connection, so
//     repeated duplicate ACKs get fresh draws too.
//
// The numbers live with the connection, never in a table of segments: a
// segment waiting out a long RTO on a busy link cannot be forgotten and
// drawn again as its first transmission, which lost it again and again
// (issue 14). Anything else draws from the controller's generator.
func (c *Controller) lossDraw(r *Rule, p *packet.Packet, fi *flow.Info) float64 {
	if fi == nil || fi.Kind == flow.KindOther {
		return c.random()
	}
	d := dirIndex(p.Dir)
	r.mu.Lock()
	rf, _ := r.flows.Get(fi.Key)
	if rf.ordinal == 0 {
		r.lossConns++
		rf.ordinal = r.lossConns
	}
	var n uint64 // transmission 0: a first transmission
	switch {
	case fi.Kind == flow.KindRetransmit:
		n = 1<<32 | uint64(fi.Retrans[d])
	case fi.Kind != flow.KindNew || (p.PayloadLen == 0 && p.Flags&(packet.FlagSYN|packet.FlagFIN) == 0):
		rf.others[d]++
		n = 2<<32 | uint64(rf.others[d])
	}
	r.flows.Put(fi.Key, rf)
	r.mu.Unlock()
	k := mix(c.seed ^ uint64(r.ID)<<48)
	k = mix(k ^ uint64(rf.ordinal)<<8 ^ uint64(p.Dir) ^ uint64(p.Flags&(packet.FlagSYN|packet.FlagFIN|packet.FlagRST))<<4)
	k = mix(k ^ uint64(fi.RelSeq)<<20 ^ uint64(p.PayloadLen))
	return unit(mix(k ^ n))
}

// mix is splitmix64's finalizer: a bijective hash of 64 bits.
func mix(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// unit maps 64 random bits to a uniform float64 in [0, 1).
func unit(z uint64) float64 { return float64(z>>11) / (1 << 53) }

// take claims one of the rule's Count actions; false when they are used up.
func (r *Rule) take() bool {
	if r.Spec.Count == 0 {
		return true
	}
	return r.acted.Add(1) <= int64(r.Spec.Count)
}

// fire claims the rule's one reset for a connection's direction.
func (r *Rule) fire(k flow.Key, d packet.Direction) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	rf, _ := r.flows.Get(k)
	i := dirIndex(d)
	if rf.fired[i] {
		return false
	}
	rf.fired[i] = true
	r.flows.Put(k, rf)
	return true
}

// pace queues p behind the rule's earlier packets in its direction and
// returns how long it waits until it has left at the rule's rate; false
// when the queue is full (tail drop). An empty queue always takes a packet.
func (r *Rule) pace(p *packet.Packet, now tcpip.MonotonicTime) (time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := dirIndex(p.Dir)
	free := r.nextFree[i]
	if free.Before(now) {
		free = now
	}
	rate := float64(r.Spec.Rate)
	queue := r.Spec.Queue
	if queue == 0 {
		queue = DefaultRateQueue
	}
	if backlog := free.Sub(now); backlog > 0 {
		waiting := float64(backlog) * rate / 8e9 // bytes still queued
		if waiting+float64(p.Len) > float64(queue) {
			return 0, false
		}
	}
	tx := time.Duration(float64(p.Len) * 8e9 / rate)
	r.nextFree[i] = free.Add(tx)
	return r.nextFree[i].Sub(now), true
}

// burstLost runs one step of the rule's Gilbert–Elliott chain for
// direction d: whether this packet is lost in the current state, then the
// state transition.
func (r *Rule) burstLost(c *Controller, d packet.Direction) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := dirIndex(d)
	ge := &r.Spec.GE
	deliver := ge.K
	if r.bad[i] {
		deliver = ge.H
	}
	lost := c.random() >= deliver
	if r.bad[i] {
		r.bad[i] = c.random() >= ge.R
	} else {
		r.bad[i] = c.random() < ge.P
	}
	return lost
}

// track shows p to the flow tracker.
func (c *Controller) track(p *packet.Packet, now tcpip.MonotonicTime) flow.Info {
	seg := flow.SegmentOf(p)
	c.flowMu.Lock()
	defer c.flowMu.Unlock()
	if c.tracker == nil { // the last stateful rule went meanwhile
		return flow.Info{}
	}
	return c.tracker.Track(&seg, stamp(now))
}

// Comment returns the capture comment for a decision ("" for Pass).
func (c *Controller) Comment(d Decision) string {
	if d.Rule == 0 {
		return ""
	}
	for _, r := range *c.rules.Load() {
		if r.ID == d.Rule {
			return r.note(d)
		}
	}
	return fmt.Sprintf("%s by rule %d", d.Verdict, d.Rule)
}

// next advances the lock-free splitmix64 generator and returns its output.
func (c *Controller) next() uint64 {
	z := c.rng.Add(0x9e3779b97f4a7c15)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// random returns a uniform float64 in [0, 1).
func (c *Controller) random() float64 {
	return unit(c.next())
}
