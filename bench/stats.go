package bench

import (
	"fmt"
	"slices"
	"time"
)

// nonMatchingRules are ten active rules on ports nothing uses: every packet
// is checked against all of them and none applies.
var nonMatchingRules = func() []string {
	actions := []string{"drop", "loss 50%", "delay 10ms", "drop dir=in", "drop flags=syn"}
	rules := make([]string, 10)
	for i := range rules {
		rules[i] = fmt.Sprintf("%s port=%d", actions[i%len(actions)], 61001+i)
	}
	return rules
}()

// median returns the median of v.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// micros converts d to microseconds.
func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
