package fault

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// Rule is an installed fault rule with its counters. Counters are updated on
// the packet path with atomics; read them through Status.
type Rule struct {
	ID   int
	Spec Spec

	start, end tcpip.MonotonicTime // active window; end zero = open-ended
	dropNote   string              // precomputed capture comments
	delayNote  string

	matched, dropped, delayed atomic.Uint64
	acted                     atomic.Int64 // packets acted on, for Count
}

// RuleStatus is a snapshot of a rule for `unplug fault list` and reports.
type RuleStatus struct {
	ID      int    `json:"id"`
	Spec    string `json:"spec"`
	State   string `json:"state"` // pending, active or expired
	Matched uint64 `json:"matched"`
	Dropped uint64 `json:"dropped"`
	Delayed uint64 `json:"delayed"`
	// StartsIn and EndsIn are relative to the snapshot (negative = past);
	// EndsIn is omitted for open-ended rules.
	StartsIn time.Duration  `json:"starts_in_ns"`
	EndsIn   *time.Duration `json:"ends_in_ns,omitempty"`
}

// Controller holds the fault rules and decides each packet's fate. Decide is
// lock-free and allocation-free so it can sit on the packet path; Add, Remove
// and Clear copy the rule list.
type Controller struct {
	clock tcpip.Clock
	rules atomic.Pointer[[]*Rule]
	rng   atomic.Uint64 // splitmix64 state: deterministic for a given seed

	mu     sync.Mutex // serializes writers
	nextID int
}

// NewController returns a controller with no rules, timing rules on clock and
// drawing loss and jitter from a generator seeded with seed, so a run with the
// same seed and packet order makes the same decisions.
func NewController(clock tcpip.Clock, seed uint64) *Controller {
	c := &Controller{clock: clock, nextID: 1}
	c.rng.Store(seed)
	c.rules.Store(&[]*Rule{})
	return c
}

// Clock returns the clock rules are scheduled on.
func (c *Controller) Clock() tcpip.Clock { return c.clock }

// Add installs a rule; its after= and for= count from now. It returns the
// rule's id.
func (c *Controller) Add(sp Spec) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := &Rule{ID: c.nextID, Spec: sp}
	c.nextID++
	r.start = c.clock.NowMonotonic().Add(sp.After)
	if sp.For > 0 {
		r.end = r.start.Add(sp.For)
	}
	r.dropNote = fmt.Sprintf("dropped by rule %d: %s", r.ID, sp)
	r.delayNote = fmt.Sprintf("delayed by rule %d: %s", r.ID, sp)
	old := *c.rules.Load()
	rules := append(old[:len(old):len(old)], r)
	c.rules.Store(&rules)
	return r.ID
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
	c.rules.Store(&rules)
	return nil
}

// Clear removes every rule and returns how many there were.
func (c *Controller) Clear() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(*c.rules.Load())
	c.rules.Store(&[]*Rule{})
	return n
}

// Status returns a snapshot of every rule in installation order.
func (c *Controller) Status() []RuleStatus {
	now := c.clock.NowMonotonic()
	rules := *c.rules.Load()
	out := make([]RuleStatus, 0, len(rules))
	for _, r := range rules {
		st := RuleStatus{
			ID: r.ID, Spec: r.Spec.String(), State: r.state(now),
			Matched:  r.matched.Load(),
			Dropped:  r.dropped.Load(),
			Delayed:  r.delayed.Load(),
			StartsIn: r.start.Sub(now),
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
	return r.Spec.Count > 0 && r.acted.Load() >= int64(r.Spec.Count)
}

// matches reports whether the rule's selectors accept p.
func (r *Rule) matches(p *Packet) bool {
	sp := &r.Spec
	if sp.Dir&p.Dir == 0 {
		return false
	}
	if sp.Port != 0 && (p.Version == 0 || p.Port() != sp.Port) {
		return false
	}
	return sp.Flags == 0 || Classes(p)&sp.Flags != 0
}

// Decide returns the fate of packet p: the first active rule whose selectors
// match and whose action fires decides it. Every active matching rule counts
// the packet as matched, up to and including the deciding one.
func (c *Controller) Decide(p *Packet) Decision {
	rules := *c.rules.Load()
	if len(rules) == 0 {
		return Decision{}
	}
	now := c.clock.NowMonotonic()
	for _, r := range rules {
		if now.Before(r.start) || r.expired(now) || !r.matches(p) {
			continue
		}
		r.matched.Add(1)
		sp := &r.Spec
		switch sp.Action {
		case ActLoss:
			if c.random() >= sp.Loss {
				continue
			}
			fallthrough
		case ActDrop:
			if !r.take() {
				continue
			}
			r.dropped.Add(1)
			return Decision{Verdict: Dropped, Rule: r.ID}
		case ActDelay:
			if !r.take() {
				continue
			}
			d := sp.Delay
			if sp.Jitter > 0 {
				d += time.Duration(c.random() * float64(sp.Jitter))
			}
			r.delayed.Add(1)
			return Decision{Verdict: Delayed, Rule: r.ID, Delay: d}
		}
	}
	return Decision{}
}

// take claims one of the rule's Count actions; false when they are used up.
func (r *Rule) take() bool {
	if r.Spec.Count == 0 {
		return true
	}
	return r.acted.Add(1) <= int64(r.Spec.Count)
}

// Comment returns the capture comment for a decision ("" for Pass).
func (c *Controller) Comment(d Decision) string {
	if d.Verdict == Pass {
		return ""
	}
	for _, r := range *c.rules.Load() {
		if r.ID == d.Rule {
			if d.Verdict == Dropped {
				return r.dropNote
			}
			return r.delayNote
		}
	}
	return fmt.Sprintf("%s by rule %d", d.Verdict, d.Rule)
}

// random returns a uniform float64 in [0, 1) from a lock-free splitmix64.
func (c *Controller) random() float64 {
	z := c.rng.Add(0x9e3779b97f4a7c15)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return float64(z>>11) / (1 << 53)
}
