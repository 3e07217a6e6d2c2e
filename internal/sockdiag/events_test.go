package sockdiag

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestEvents: retransmissions, probes, state changes, recovery and the end
// are read off a series, with firing times taken from the timers.
func TestEvents(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	smp := func(at, prev int, st, timer string, exp int, edit func(*Sample)) Sample {
		s := Sample{At: ms(at), State: st, Timer: timer, TimerExpires: time.Duration(exp) * time.Millisecond, RTO: 204 * time.Millisecond}
		if prev >= 0 {
			s.PrevAt = ms(prev)
		}
		if edit != nil {
			edit(&s)
		}
		return s
	}
	retrans := func(total, rto, backoff int) func(*Sample) {
		return func(s *Sample) {
			s.TotalRetrans, s.Retransmits, s.Backoff = uint32(total), rto, backoff
			s.RTO = 204 * time.Millisecond << backoff
		}
	}
	c := ConnSamples{
		Samples: []Sample{
			smp(0, -1, StateEstablished, TimerRetrans, 200, nil),                                      // data sent; TLP armed for +200
			smp(210, 190, StateEstablished, TimerRetrans, 200, retrans(1, 0, 0)),                      // TLP fired at 200
			smp(420, 400, StateEstablished, TimerRetrans, 408, retrans(2, 1, 1)),                      // RTO fired at 410
			smp(840, 820, StateEstablished, TimerRetrans, 816, retrans(3, 2, 2)),                      // RTO fired at 828
			smp(1000, 980, StateEstablished, TimerNone, 0, nil),                                       // acknowledged
			smp(2000, 1980, StateEstablished, TimerKeepalive, 1000, nil),                              // keepalive re-armed
			smp(3010, 2990, StateEstablished, TimerKeepalive, 1000, func(s *Sample) { s.Probes = 1 }), // probe at 3000
		},
		Gone: true, LastSeen: ms(3990), GoneAt: ms(4010),
	}
	c.Last = c.Samples[len(c.Samples)-1]
	c.Last.At = ms(3990)
	c.Last.TimerExpires = 20 * time.Millisecond
	var got []string
	for _, e := range c.Events() {
		s := fmt.Sprintf("%s@%d", e.Kind, e.At.Sub(t0).Milliseconds())
		switch e.Kind {
		case EventRetransmit:
			s += fmt.Sprintf("(%d,timeout=%v,backoff=%d,timer=%s)", e.Count, e.Timeout, e.Backoff, e.Timer)
		case EventProbe:
			s += fmt.Sprintf("(%d,%s)", e.Probes, e.Timer)
		case EventGone:
			s += fmt.Sprintf("(%s,%d..%d)", e.Timer, e.Earliest.Sub(t0).Milliseconds(), e.Latest.Sub(t0).Milliseconds())
		}
		got = append(got, s)
	}
	want := []string{
		"retransmit@200(1,timeout=false,backoff=0,timer=on)",
		"retransmit@410(1,timeout=true,backoff=1,timer=on)",
		"retransmit@828(1,timeout=true,backoff=2,timer=on)",
		"recovered@1000",
		"probe@3000(1,keepalive)",
		"gone@4010(keepalive,3990..4010)",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
