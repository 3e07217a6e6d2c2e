package reference

import (
	"testing"
	"time"

	"github.com/unplug-dev/unplug/scenarios"
)

// execReport is a report of one program run with one connection that
// retransmitted at the given times (ms since its request) and ended how
// at end (ms).
func execReport(code int, how string, end int, retrans ...int) *scenarios.Report {
	ms := func(v int) time.Duration { return time.Duration(v) * time.Millisecond }
	r := &scenarios.Report{Exec: &scenarios.ExecInfo{ExitCode: code}}
	pkt := func(t int, dir, kind string, n int) {
		r.Timeline = append(r.Timeline, scenarios.Event{T: ms(t), Kind: scenarios.EventPacket, Conn: 1,
			Packet: &scenarios.Packet{Dir: dir, Proto: "tcp", Kind: kind, Len: n}})
	}
	pkt(0, "in", "new", 0)
	pkt(1, "out", "new", 0)
	pkt(1, "in", "new", 0)
	pkt(1000, "in", "new", 1)
	for _, t := range retrans {
		pkt(1000+t, "in", "retransmit", 1)
	}
	r.Exec.Conns = []scenarios.ConnReport{{ID: 1, Peer: "198.18.0.2:7",
		Settings: scenarios.TimeoutSettings{RTO: ms(204)}, End: scenarios.ConnEnd{How: how, At: ms(1000 + end)}}}
	return r
}

// TestCompareExec: the same run agrees with itself and with timer jitter;
// each broken mechanism — another ending, a retransmission fewer, another
// exit code, a connection missing, an ending much later — disagrees: the
// verdict can fail.
func TestCompareExec(t *testing.T) {
	series := []int{206, 415, 847, 1677, 3339}
	ref := execReport(3, scenarios.EndTimeoutRetries, 6650, series...)
	for _, tc := range []struct {
		name  string
		got   *scenarios.Report
		agree bool
	}{
		{"same", execReport(3, scenarios.EndTimeoutRetries, 6650, series...), true},
		{"jitter", execReport(3, scenarios.EndTimeoutRetries, 6700, 209, 418, 860, 1700, 3370), true},
		{"another ending", execReport(3, scenarios.EndHanging, 6650, series...), false},
		{"a retransmission fewer", execReport(3, scenarios.EndTimeoutRetries, 3450, 206, 415, 847, 1677), false},
		{"another exit code", execReport(0, scenarios.EndTimeoutRetries, 6650, series...), false},
		{"ended 2 s later", execReport(3, scenarios.EndTimeoutRetries, 8650, series...), false},
		{"no connection", func() *scenarios.Report {
			r := execReport(3, scenarios.EndTimeoutRetries, 6650, series...)
			r.Exec.Conns = nil
			return r
		}(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows := CompareExec(ref, tc.got)
			if Agree(rows) != tc.agree {
				t.Errorf("agree = %v, want %v:\n%s", !tc.agree, tc.agree, FormatRows(rows))
			}
		})
	}
	s := FromConn(ref, ref.Exec.Conns[0], "x")
	if s.T0 != time.Second || len(s.Times) != 5 || s.OutcomeAt != 6650*time.Millisecond || s.Outcome != scenarios.EndTimeoutRetries {
		t.Errorf("FromConn: %+v", s)
	}
}
