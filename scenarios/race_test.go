//go:build race

package scenarios

// raceEnabled: the race detector slows the peer's netstack enough that a
// packet can be timestamped 100–200 ms after the kernel sent it, which
// skews backoff ratios computed from intervals of a few hundred
// milliseconds.
const raceEnabled = true
