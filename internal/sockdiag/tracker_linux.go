package sockdiag

import (
	"sync"
	"time"
)

// Tracker is a cheaper dump function for a Sampler: it lists every socket
// with a full Dump only every FullEvery and, in between, asks the kernel
// for each socket the last full dump listed, one by one.
//
// A dump walks the whole TCP socket table, which a network namespace
// shares with the host unless it was created with its own
// (net.ipv4.tcp_child_ehash_entries; tun.NewNamespace's default): with
// the host's 262144 buckets that is about 1.5 ms per address family even
// when the namespace has no sockets, with an own 4096-bucket table about
// 0.1 ms, less than looking up a hundred sockets. A lookup is one hash
// probe, a few microseconds. The price: a socket opened
// and gone between two full dumps is never seen; call Rescan when
// something else (the peer accepting a connection) says a new one exists.
type Tracker struct {
	// FullEvery is the interval between full dumps; 0 means
	// DefaultFullDump, negative means every call (a plain Dump).
	FullEvery time.Duration

	d      *Dumper
	mu     sync.Mutex
	known  []Socket // sockets of the last full dump that still exist, without Info
	last   time.Time
	rescan bool
}

// NewTracker returns a Tracker over d.
func NewTracker(d *Dumper) *Tracker { return &Tracker{d: d} }

// Rescan makes the next Dump a full one.
func (t *Tracker) Rescan() {
	t.mu.Lock()
	t.rescan = true
	t.mu.Unlock()
}

// Dump lists the namespace's TCP sockets: all of them on a full dump, the
// ones the last full dump listed (and that still exist) otherwise. It has
// the signature NewSampler takes; like Dumper.Dump it returns the
// Dumper's own storage, overwritten by the next call.
func (t *Tracker) Dump() ([]Socket, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	every := t.FullEvery
	if every == 0 {
		every = DefaultFullDump
	}
	now := time.Now()
	if t.rescan || every < 0 || t.last.IsZero() || now.Sub(t.last) >= every {
		out, err := t.d.Dump()
		if err != nil && err != ErrDumpInterrupted {
			return out, err
		}
		t.rescan = false
		t.last = now
		t.known = t.known[:0]
		for _, s := range out {
			s.Info = nil
			t.known = append(t.known, s)
		}
		return out, err
	}
	out, keep, err := t.d.lookupAll(t.known)
	if err != nil {
		return out, err
	}
	t.known = keep
	return out, nil
}

// lookupAll looks up each of keys and returns the sockets found, and keys
// without the ones not found (reusing keys' storage).
func (d *Dumper) lookupAll(keys []Socket) (out, keep []Socket, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.init(); err != nil {
		return nil, keys, err
	}
	p := &d.parser
	p.reset()
	out = d.out[:0]
	keep = keys[:0]
	for i := range keys {
		s, found, err := d.lookupLocked(p, &keys[i])
		if err != nil {
			d.out = out[:0]
			return out, append(keep, keys[i:]...), err
		}
		if found {
			out = append(out, s)
			keep = append(keep, keys[i])
		}
	}
	d.out = out[:0]
	return out, keep, nil
}
