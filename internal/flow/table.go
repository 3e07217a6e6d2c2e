package flow

// DefaultMaxConns bounds the connections a Tracker remembers: beyond it, the
// least recently active are forgotten.
const DefaultMaxConns = 65536

// Table is a map bounded to about limit entries that forgets the least
// recently used ones. It keeps two generations: entries live in cur; when cur
// holds limit/2 entries, cur becomes old and the previous old is discarded.
// A hit in old moves the entry back to cur. Values are stored inline, and the
// discarded generation's memory is reused, so steady-state use does not
// allocate.
//
// The zero Table is not usable; make one with NewTable. A Table is not safe
// for concurrent use.
type Table[K comparable, V any] struct {
	cur, old map[K]V
	half     int
}

// NewTable returns an empty table holding at most about limit entries (at
// least 2).
func NewTable[K comparable, V any](limit int) Table[K, V] {
	return Table[K, V]{half: max(limit/2, 1)}
}

// Get returns the value for k, refreshing its recency.
func (t *Table[K, V]) Get(k K) (V, bool) {
	if v, ok := t.cur[k]; ok {
		return v, true
	}
	if v, ok := t.old[k]; ok {
		delete(t.old, k)
		t.Put(k, v)
		return v, true
	}
	var zero V
	return zero, false
}

// Peek returns the value for k without refreshing it.
func (t *Table[K, V]) Peek(k K) (V, bool) {
	if v, ok := t.cur[k]; ok {
		return v, true
	}
	v, ok := t.old[k]
	return v, ok
}

// Put stores v for k.
func (t *Table[K, V]) Put(k K, v V) {
	if t.cur == nil {
		t.cur = make(map[K]V)
	}
	if _, ok := t.cur[k]; !ok {
		delete(t.old, k)
		if len(t.cur) >= t.half {
			t.cur, t.old = t.old, t.cur
			if t.cur == nil {
				t.cur = make(map[K]V)
			} else {
				clear(t.cur)
			}
		}
	}
	t.cur[k] = v
}

// Len returns the number of entries held.
func (t *Table[K, V]) Len() int { return len(t.cur) + len(t.old) }

// Limit returns the most entries the table holds.
func (t *Table[K, V]) Limit() int { return 2 * t.half }
