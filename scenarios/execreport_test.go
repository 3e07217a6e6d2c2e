package scenarios

import (
	"net/netip"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack/fault"
)

// TestExecJSONSchema checks an exec report with every optional field set
// against docs/report-schema.md.
func TestExecJSONSchema(t *testing.T) {
	schema := loadSchema(t)
	d := func(x time.Duration) *time.Duration { return &x }
	rep := sampleReport()
	rep.Exec = &ExecInfo{
		Argv: []string{"curl", "-m", "3"}, ExitCode: 28, ExitedAt: 3 * time.Second, Stopped: "--timeout 30s: SIGTERM",
		Sysctls: []Sysctl{{Name: "net.ipv4.tcp_retries2", Value: "15"}}, KernelView: "sock_diag every 20ms",
		Conns: []ConnReport{{
			ID: 1, Client: "198.18.0.1:4000", Peer: "198.19.7.2:80", Upstream: "198.19.7.2:80 (the real destination)",
			Established: d(time.Millisecond), LastReceived: d(time.Millisecond), FaultHit: d(time.Second), FaultLast: d(2 * time.Second),
			Recovered: d(3 * time.Second), Noticed: d(time.Second), Backoff: 2.01, Idle: &Estimate{Want: 1},
			Settings: TimeoutSettings{Source: "getsockopt"}, End: ConnEnd{How: EndClosed},
			Kernel: []KernelSample{{State: "ESTABLISHED", Timer: "on", TimerExpires: time.Second, Closed: true}},
		}},
	}
	checkSchema(t, decodeReport(t, rep), schema)
}

// seg builds a TCP packet event for the tracker tests.
func seg(t time.Duration, dir packet.Direction, flags uint8, seq uint32, n int, v fault.Verdict) *fault.Event {
	cl, pe := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	p := &packet.Packet{Dir: dir, Version: 4, Proto: packet.ProtoTCP, Flags: flags, Seq: seq, PayloadLen: n, Src: cl, Dst: pe, SrcPort: 4000, DstPort: 7}
	if dir == packet.Out {
		p.Src, p.Dst, p.SrcPort, p.DstPort = pe, cl, 7, 4000
	}
	return &fault.Event{Time: time.Unix(0, 0).Add(t), Packet: p, Decision: fault.Decision{Verdict: v}}
}

// TestConnEndings: the wire alone tells refused, closed, reset and a
// hanging request apart; with a kernel view that saw the socket vanish
// while retransmitting, the tcp_retries2 timeout.
func TestConnEndings(t *testing.T) {
	const (
		syn = packet.FlagSYN
		ack = packet.FlagACK
		fin = packet.FlagFIN | packet.FlagACK
		rst = packet.FlagRST | packet.FlagACK
		psh = packet.FlagPSH | packet.FlagACK
	)
	ms := time.Millisecond
	handshake := []*fault.Event{seg(0, packet.In, syn, 100, 0, fault.Pass), seg(ms, packet.Out, syn|ack, 500, 0, fault.Pass), seg(2*ms, packet.In, ack, 101, 0, fault.Pass)}
	request := []*fault.Event{seg(time.Second, packet.In, psh, 101, 5, fault.Dropped), seg(1200*ms, packet.In, psh, 101, 5, fault.Dropped), seg(1400*ms, packet.In, psh, 101, 5, fault.Dropped)}
	for _, tc := range []struct {
		name   string
		events []*fault.Event
		kernel []KernelConn
		how    string
	}{
		{"refused", []*fault.Event{seg(0, packet.In, syn, 100, 0, fault.Pass), seg(ms, packet.Out, rst, 0, 0, fault.Pass)}, nil, EndRefused},
		{"closed by the program", append(append([]*fault.Event{}, handshake...), seg(5*ms, packet.In, fin, 101, 0, fault.Pass)), nil, EndClosed},
		{"reset by the program", append(append([]*fault.Event{}, handshake...), seg(5*ms, packet.In, rst, 101, 0, fault.Pass)), nil, EndReset},
		{"closed upstream", append(append([]*fault.Event{}, handshake...), seg(5*ms, packet.Out, fin, 501, 0, fault.Pass)), nil, EndClosedUpstream},
		{"hanging", append(append([]*fault.Event{}, handshake...), request...), []KernelConn{{}}, EndHanging},
		{"zero-window probes unanswered", append(append([]*fault.Event{}, handshake...), request...), []KernelConn{{
			Samples: []KernelSample{{T: 1500 * ms, State: "ESTABLISHED", Timer: "persist", TimerExpires: 200 * ms, Probes: 15}}, Gone: 1800 * ms,
		}}, EndTimeoutRetries},
		{"retransmissions stopped, settings unknown", append(append([]*fault.Event{}, handshake...), request...), nil, EndTimeout},
		{"kernel timeout", append(append([]*fault.Event{}, handshake...), request...), []KernelConn{{
			Samples: []KernelSample{{T: 1500 * ms, State: "ESTABLISHED", Timer: "on", TimerExpires: 200 * ms, Retransmits: 2}}, Gone: 1800 * ms,
		}}, EndTimeoutRetries},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			rec.start = time.Unix(0, 0)
			ct := newConnTracker(rec)
			for _, ev := range tc.events {
				ct.Observe(ev)
			}
			for i := range tc.kernel {
				tc.kernel[i].Src, tc.kernel[i].Dst = netip.MustParseAddrPort("198.18.0.1:4000"), netip.MustParseAddrPort("198.18.0.2:7")
			}
			cs := ct.buildConns(10*time.Second, 10*time.Second, "", tc.kernel, TimeoutSettings{Retries2: 15}, describeUpstream(nil, false))
			if len(cs) != 1 {
				t.Fatalf("got %d connections", len(cs))
			}
			if cs[0].End.How != tc.how {
				t.Errorf("ended %s (%s), want %s", cs[0].End.How, cs[0].End.Detail, tc.how)
			}
		})
	}
}

// TestKernelGaveUp places a kernel timeout between the last sample that
// listed the socket (no earlier than its timer's due time) and the first
// that did not: the timer wheel runs a timer after it is due.
func TestKernelGaveUp(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name string
		last KernelSample
		gone time.Duration
		want time.Duration
	}{
		{"due between the samples", KernelSample{T: 1000 * ms, TimerExpires: 6 * ms}, 1020 * ms, 1013 * ms},
		{"due, not yet run at the last sample", KernelSample{T: 1000 * ms}, 1020 * ms, 1010 * ms},
		{"due after the socket went", KernelSample{T: 1000 * ms, TimerExpires: 40 * ms}, 1020 * ms, 1020 * ms},
		{"no sample listed it: when it was gone", KernelSample{}, 1020 * ms, 1020 * ms},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := kernelGaveUp(tc.last, tc.gone); got != tc.want {
				t.Errorf("kernelGaveUp = %v, want %v", got, tc.want)
			}
		})
	}
}
