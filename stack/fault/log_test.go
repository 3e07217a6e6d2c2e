package fault

import (
	"strings"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/internal/packet"
)

func TestLog(t *testing.T) {
	l := NewLog(3)
	p := parsed(t, packet.In, in(packet.FlagACK|packet.FlagPSH, 1001, 5001, 500, 10))
	for i := range 5 {
		l.Observe(&Event{Time: time.Unix(int64(i), 0), Packet: p}) // passed: not logged
		l.Observe(&Event{Time: time.Unix(int64(i), 0), Packet: p, Decision: Decision{Verdict: Dropped, Rule: i + 1, Action: ActDrop},
			Comment: "dropped by rule"})
	}
	es := l.Entries()
	if l.Total() != 5 || len(es) != 3 || es[0].Rule != 3 || es[2].Rule != 5 {
		t.Fatalf("total %d, entries %+v", l.Total(), es)
	}
	if s := es[0].String(); !strings.Contains(s, "198.18.0.1:40000 > 198.18.0.2:80 [P.] seq 1001 len 10: dropped by rule") {
		t.Errorf("entry %q", s)
	}
	if raceEnabled {
		return
	}
	ev := &Event{Packet: p, Decision: Decision{Verdict: Dropped, Rule: 1}, Comment: "x"}
	if n := testing.AllocsPerRun(100, func() { l.Observe(ev) }); n != 0 {
		t.Errorf("Observe allocates %.1f times", n)
	}
}
