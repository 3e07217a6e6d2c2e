package fault

import (
	"time"

	"github.com/unplug-dev/unplug/internal/packet"
)

// Verdict is what the fault layer decided for one packet.
type Verdict uint8

// Verdicts.
const (
	Pass    Verdict = iota // forwarded unchanged
	Dropped                // did not reach the receiver: dropped, lost, rejected, corrupted, replaced
	Delayed                // held back and forwarded later (delay, rate queue, reorder)
	// Injected marks a packet the fault layer made up and sent: the RST of
	// a reject or rst-at-seq rule, the copy of a duplicate rule. Decide
	// never returns it; observers see it in events of their own.
	Injected
)

// String returns "pass", "drop", "delay" or "inject".
func (v Verdict) String() string {
	switch v {
	case Dropped:
		return "drop"
	case Delayed:
		return "delay"
	case Injected:
		return "inject"
	}
	return "pass"
}

// Decision is the verdict for one packet and the rule that caused it.
type Decision struct {
	Verdict Verdict
	Rule    int           // id of the deciding rule, 0 when none matched
	Delay   time.Duration // hold time for Delayed
	// Action is the deciding rule's action, 0 when none matched. It tells
	// the link what else to do: answer with a RST (ActReject), send a RST
	// instead (ActRSTAtSeq), send a copy (ActDuplicate, with Verdict Pass),
	// send a corrupted copy (ActCorrupt), hold for Arg packets (ActReorder).
	Action Action
	// Arg is the action's argument: the packets that overtake a reordered
	// one (ActReorder), a random number choosing the bit to flip
	// (ActCorrupt).
	Arg int
}

// Event describes one packet seen by the fault layer, in either direction,
// with the decision taken. Data is the raw IP packet and is only valid for the
// duration of the Observe call: copy it to keep it.
type Event struct {
	Time     time.Time      // from the layer's clock (virtual in virtual-time runs)
	Packet   *packet.Packet // parsed view; Packet.Version == 0 if unparseable
	Data     []byte
	Decision Decision
	Comment  string // human description of the decision ("dropped by rule 1: drop dir=in")
}

// Observer receives every packet the fault layer sees, after the decision,
// synchronously on the packet path: implementations must be fast and must not
// block (captures buffer, loggers write to buffered writers).
type Observer interface {
	Observe(ev *Event)
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(ev *Event)

// Observe calls f(ev).
func (f ObserverFunc) Observe(ev *Event) { f(ev) }

// Observers fans one event out to several observers in order.
type Observers []Observer

// Observe calls every observer in turn.
func (os Observers) Observe(ev *Event) {
	for _, o := range os {
		o.Observe(ev)
	}
}

// Join returns an Observer for the non-nil observers given, or nil if none.
func Join(obs ...Observer) Observer {
	var out Observers
	for _, o := range obs {
		if o != nil {
			out = append(out, o)
		}
	}
	switch len(out) {
	case 0:
		return nil
	case 1:
		return out[0]
	}
	return out
}
