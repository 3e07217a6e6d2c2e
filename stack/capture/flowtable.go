package capture

// DefaultMaxFlows bounds the per-flow state kept by RetransmitTracker and
// Logger: beyond it, the least recently active flows are forgotten.
const DefaultMaxFlows = 65536

// flowTable is a map bounded to about limit entries that forgets the least
// recently used ones. It keeps two generations: entries live in cur; when cur
// holds limit/2 entries, cur becomes old and the previous old is discarded.
// A hit in old moves the entry back to cur. Values are stored inline, and the
// discarded generation's memory is reused, so steady-state use does not
// allocate.
type flowTable[K comparable, V any] struct {
	cur, old map[K]V
	half     int
}

func newFlowTable[K comparable, V any](limit int) flowTable[K, V] {
	return flowTable[K, V]{half: max(limit/2, 1)}
}

// get returns the value for k, refreshing its recency.
func (t *flowTable[K, V]) get(k K) (V, bool) {
	if v, ok := t.cur[k]; ok {
		return v, true
	}
	if v, ok := t.old[k]; ok {
		delete(t.old, k)
		t.put(k, v)
		return v, true
	}
	var zero V
	return zero, false
}

// peek returns the value for k without refreshing it.
func (t *flowTable[K, V]) peek(k K) (V, bool) {
	if v, ok := t.cur[k]; ok {
		return v, true
	}
	v, ok := t.old[k]
	return v, ok
}

// put stores v for k.
func (t *flowTable[K, V]) put(k K, v V) {
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

// len returns the number of entries held.
func (t *flowTable[K, V]) len() int { return len(t.cur) + len(t.old) }
