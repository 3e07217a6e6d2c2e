//go:build !race

package scenarios

// raceEnabled reports whether the race detector is on (see race_test.go).
const raceEnabled = false
