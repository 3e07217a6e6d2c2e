package capture

import (
	"testing"
	"time"
)

// TestTimestampsNonDecreasing checks that a packet timed before the one
// written just before it (the inbound and outbound paths race for the
// writer's lock) gets that one's timestamp instead of going backwards,
// while later packets keep their own.
func TestTimestampsNonDecreasing(t *testing.T) {
	for _, nano := range []bool{false, true} {
		evs := sampleEvents(t)[:4]
		evs[1].Time = evs[0].Time.Add(-3 * time.Microsecond) // raced: timed before the first
		var opts []Option
		if nano {
			opts = append(opts, Nanoseconds())
		}
		recs := readAll(t, writeAll(t, evs, opts...))
		if len(recs) != len(evs) {
			t.Fatalf("nano=%t: read %d records, wrote %d", nano, len(recs), len(evs))
		}
		unit := time.Microsecond
		if nano {
			unit = time.Nanosecond
		}
		if !recs[1].Time.Equal(recs[0].Time) {
			t.Errorf("nano=%t: raced record at %v, want the previous %v", nano, recs[1].Time, recs[0].Time)
		}
		for i := 2; i < len(recs); i++ {
			if want := evs[i].Time.Truncate(unit); !recs[i].Time.Equal(want) {
				t.Errorf("nano=%t: record %d at %v, want its own %v", nano, i, recs[i].Time, want)
			}
		}
	}
}
