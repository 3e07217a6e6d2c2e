package vlink

import (
	"container/heap"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// Epoch is the wall-clock time at which every virtual clock starts: Clock.Now
// returns Epoch plus Elapsed, so timestamps in captures and packet logs of a
// virtual run read as seconds since 1970-01-01 00:00:00 UTC.
var Epoch = time.Unix(0, 0).UTC()

// monoBase offsets the monotonic clock so that no instant of a run is the zero
// tcpip.MonotonicTime, which gVisor uses to mean "never" (for example the
// sender's firstRetransmittedSegXmitTime): a segment sent at virtual time zero
// must not look as if it had never been sent.
const monoBase = time.Hour

// Clock is a tcpip.Clock for virtual time: it moves only when AdvanceTo or
// FireNext moves it, and it fires timers synchronously, one at a time, in
// deadline order (ties in arming order), on the goroutine that moves it.
//
// It replaces faketime.ManualClock, which it resembles, for three reasons:
// ManualClock does not expose the next deadline; it fires timers that share a
// deadline in Go map order, which is random; and it runs timers armed with a
// zero or negative duration on a fresh goroutine at once. Clock arms those for
// the current instant instead, so they fire on the next FireNext or AdvanceTo
// (Pair.Settle does that), deterministically.
//
// All methods are safe for concurrent use; gVisor arms and stops timers from
// its own goroutines.
type Clock struct {
	mu     sync.Mutex
	now    time.Duration // since the start of the run
	seq    uint64        // arming order, breaks ties between equal deadlines
	timers timerHeap
	fired  uint64
	onFire func(name string)
}

var _ tcpip.Clock = (*Clock)(nil)

// NewClock returns a clock at virtual time zero (wall time Epoch) with no
// timers.
func NewClock() *Clock { return &Clock{} }

// Now implements tcpip.Clock: Epoch plus the virtual time elapsed.
func (c *Clock) Now() time.Time { return Epoch.Add(c.Elapsed()) }

// NowMonotonic implements tcpip.Clock.
func (c *Clock) NowMonotonic() tcpip.MonotonicTime {
	return tcpip.MonotonicTime{}.Add(monoBase + c.Elapsed())
}

// Elapsed returns the virtual time since the clock was created.
func (c *Clock) Elapsed() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc implements tcpip.Clock: f runs when the clock reaches now+d, on
// the goroutine that advances the clock. A zero or negative d arms the timer
// for the current instant.
func (c *Clock) AfterFunc(d time.Duration, f func()) tcpip.Timer {
	t := &timer{clock: c, f: f, index: -1}
	c.mu.Lock()
	if c.onFire != nil {
		// Named now, from who is arming it (creationName), only when a
		// hook will read the name: it costs a walk of the stack.
		c.mu.Unlock()
		t.name = creationName(f)
		c.mu.Lock()
	}
	c.armLocked(t, d)
	c.mu.Unlock()
	return t
}

func (c *Clock) armLocked(t *timer, d time.Duration) {
	if t.index >= 0 {
		heap.Remove(&c.timers, t.index)
	}
	t.at = c.now + max(d, 0)
	c.seq++
	t.seq = c.seq
	heap.Push(&c.timers, t)
}

// Next returns the deadline of the earliest armed timer as virtual time since
// the start; ok is false when no timer is armed.
func (c *Clock) Next() (at time.Duration, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.timers) == 0 {
		return 0, false
	}
	return c.timers[0].at, true
}

// Pending returns how many timers are armed.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// Fired returns how many timers have fired since the clock was created.
func (c *Clock) Fired() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fired
}

// OnFire registers fn to be called just before each timer fires, with the
// name of the timer's function (see TimerName; for gVisor's TCP timers the
// method it runs, such as tcp.(*sender).retransmitTimerExpired), on the
// goroutine that advances the clock. Timers are named when they are
// created, so register the hook before the connections it should name
// exist; earlier timers are named by their function. nil removes the hook. Steppers and debuggers use it to
// show which of gVisor's timers moved the connection.
func (c *Clock) OnFire(fn func(name string)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onFire = fn
}

// FireNext fires the earliest timer whose deadline is at or before until,
// first moving the clock to that deadline. It reports whether a timer fired.
// The callback runs synchronously, without the clock's lock held.
func (c *Clock) FireNext(until time.Duration) bool {
	c.mu.Lock()
	if len(c.timers) == 0 || c.timers[0].at > until {
		c.mu.Unlock()
		return false
	}
	t := heap.Pop(&c.timers).(*timer)
	c.now = max(c.now, t.at)
	c.fired++
	hook := c.onFire
	c.mu.Unlock()
	if hook != nil {
		name := t.name
		if name == "" {
			name = TimerName(t.f)
		}
		hook(name)
	}
	t.f()
	return true
}

// AdvanceTo fires, one by one and in order, every timer due at or before the
// virtual time t (including timers armed by those callbacks), then sets the
// clock to t. Time never goes backwards: a t in the past only fires the
// timers already due.
//
// AdvanceTo does not wait for gVisor's goroutines between timers; with stacks
// attached, use Pair.AdvanceTo, which does.
func (c *Clock) AdvanceTo(t time.Duration) {
	for c.FireNext(t) {
	}
	c.mu.Lock()
	c.now = max(c.now, t)
	c.mu.Unlock()
}

// timer is one armed or idle AfterFunc timer.
type timer struct {
	clock *Clock
	f     func()
	name  string // set at creation while an OnFire hook is registered
	at    time.Duration
	seq   uint64
	index int // position in the clock's heap; -1 when not armed
}

var _ tcpip.Timer = (*timer)(nil)

// Stop implements tcpip.Timer.
func (t *timer) Stop() bool {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.index < 0 {
		return false
	}
	heap.Remove(&c.timers, t.index)
	return true
}

// Reset implements tcpip.Timer: it re-arms the timer for now+d whether or not
// it is armed.
func (t *timer) Reset(d time.Duration) {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armLocked(t, d)
}

// timerHeap orders timers by deadline, then by arming order.
type timerHeap []*timer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *timerHeap) Push(x any) {
	t := x.(*timer)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.index = -1
	return t
}
