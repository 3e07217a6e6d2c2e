package sockdiag

import "time"

// EventKind names what changed between two samples of a socket.
type EventKind string

// Event kinds, in the order Events reports simultaneous ones.
const (
	// EventState: the TCP state changed (State is the new one).
	EventState EventKind = "state"
	// EventRetransmit: segments were resent (Count of them; SYNs
	// included). Timeout
	// tells an RTO firing (Retransmits and Backoff grew) from a tail-loss
	// probe or fast retransmit (they did not).
	EventRetransmit EventKind = "retransmit"
	// EventProbe: a keepalive (Timer "keepalive") or zero-window (Timer
	// "persist") probe went unanswered; Count probes since the last
	// sample, Probes in all.
	EventProbe EventKind = "probe"
	// EventRecovered: the peer acknowledged again after timeouts: the
	// retransmission count and backoff went back to 0.
	EventRecovered EventKind = "recovered"
	// EventGone: the kernel no longer lists the socket.
	EventGone EventKind = "gone"
)

// Event is one change in a socket's series of samples.
type Event struct {
	Kind EventKind
	// At is the best estimate of when it happened: for a timer's doing
	// (retransmission, probe, keepalive abort), when the timer pending in
	// the sample before was due to fire, to the kernel's jiffy, if that
	// lies in the window; otherwise the end of the window. Earliest and
	// Latest bound the window: the poll before the change and the poll
	// that saw it.
	At, Earliest, Latest time.Time
	// Timer is the timer that was pending before the change (which timer
	// fired, for retransmissions and probes).
	Timer string
	// State is the socket's state after the change.
	State string
	// Count is how many retransmissions or probes the event covers.
	Count int
	// Timeout is set on EventRetransmit when the RTO fired.
	Timeout bool
	// Backoff, RTO, Retransmits and Probes are the values after the
	// change.
	Backoff, Retransmits, Probes int
	RTO                          time.Duration
}

// Events lists what happened to the socket, derived from its samples: state
// changes, retransmissions (with intervals recoverable from At and the RTO
// backoff), probes, recovery and disappearance. Samples dropped for
// MaxSamples leave a gap.
func (c *ConnSamples) Events() []Event {
	var out []Event
	for i := 1; i < len(c.Samples); i++ {
		prev, cur := &c.Samples[i-1], &c.Samples[i]
		ev := Event{
			Earliest: cur.PrevAt, Latest: cur.At, At: cur.At, Timer: prev.Timer, State: cur.State,
			Backoff: cur.Backoff, Retransmits: cur.Retransmits, Probes: cur.Probes, RTO: cur.RTO,
		}
		if ev.Earliest.IsZero() || ev.Earliest.Before(prev.At) {
			ev.Earliest = prev.At
		}
		fired := ev
		if prev.Timer != TimerNone {
			fired.At = clampTime(prev.At.Add(prev.TimerExpires), ev.Earliest, ev.Latest)
		}
		if cur.State != prev.State {
			e := ev
			e.Kind = EventState
			out = append(out, e)
		}
		if cur.TotalRetrans > prev.TotalRetrans {
			e := fired
			e.Kind, e.Count = EventRetransmit, int(cur.TotalRetrans-prev.TotalRetrans)
			e.Timeout = cur.Retransmits > prev.Retransmits || cur.TotalRTO > prev.TotalRTO
			out = append(out, e)
		}
		if cur.Probes > prev.Probes {
			e := fired
			e.Kind, e.Count = EventProbe, cur.Probes-prev.Probes
			out = append(out, e)
		}
		if (prev.Retransmits > 0 || prev.Backoff > 0) && cur.Retransmits == 0 && cur.Backoff == 0 {
			e := ev
			e.Kind = EventRecovered
			out = append(out, e)
		}
	}
	if c.Gone {
		last := &c.Last
		e := Event{
			Kind: EventGone, Earliest: c.LastSeen, Latest: c.GoneAt, At: c.GoneAt, Timer: last.Timer, State: last.State,
			Backoff: last.Backoff, Retransmits: last.Retransmits, Probes: last.Probes, RTO: last.RTO,
		}
		if last.Timer != TimerNone && !c.GoneAt.IsZero() {
			e.At = clampTime(last.At.Add(last.TimerExpires), e.Earliest, e.Latest)
		}
		out = append(out, e)
	}
	return out
}

// clampTime limits t to [lo, hi].
func clampTime(t, lo, hi time.Time) time.Time {
	if t.Before(lo) {
		return lo
	}
	if t.After(hi) {
		return hi
	}
	return t
}
