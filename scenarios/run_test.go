package scenarios

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/faketime"

	"github.com/unplug-dev/unplug/internal/capture"
	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/fault"
)

// fakeEnv is an environment without a network: time is a manual clock
// that calls advance, the client's calls are scripted, and its packets are
// made up and shown to the observer like the fault layer would.
type fakeEnv struct {
	clock   *faketime.ManualClock
	rec     *recorder
	obs     fault.Observer
	ctl     *fault.Controller
	sysctls map[string]string
	closed  bool
	readErr error
}

func newFakeFactory(env **fakeEnv) envFactory {
	return func(ctx context.Context, cfg envConfig) (envCloser, error) {
		clock := faketime.NewManualClock()
		cfg.Recorder.begin(clock)
		e := &fakeEnv{clock: clock, rec: cfg.Recorder, obs: cfg.Observer, ctl: fault.NewController(clock, cfg.Seed),
			sysctls: map[string]string{}, readErr: os.NewSyscallError("recv", syscall.ETIMEDOUT)}
		*env = e
		return e, nil
	}
}

func (e *fakeEnv) Kernel() bool { return false }
func (e *fakeEnv) Dial(ctx context.Context, port uint16, opts SockOpts) (envConn, error) {
	e.clock.Advance(time.Millisecond)
	return &fakeConn{env: e}, nil
}
func (e *fakeEnv) AddFault(spec string) (int, error) { return e.ctl.AddString(spec) }
func (e *fakeEnv) RemoveFault(id int) error          { return e.ctl.Remove(id) }
func (e *fakeEnv) Faults() *fault.Controller         { return e.ctl }
func (e *fakeEnv) Sleep(ctx context.Context, d time.Duration) error {
	e.clock.Advance(d)
	return nil
}
func (e *fakeEnv) Now() time.Duration                    { return e.rec.Now() }
func (e *fakeEnv) SetSysctl(name, value string) error    { e.sysctls[name] = value; return nil }
func (e *fakeEnv) Peer() PeerControl                     { return fakePeer{} }
func (e *fakeEnv) Note(kind, format string, args ...any) {}
func (e *fakeEnv) Close() error                          { e.closed = true; return nil }

type fakePeer struct{}

func (fakePeer) Forget() (int, error)                                     { return 1, nil }
func (fakePeer) Accepted(port uint16) int                                 { return 1 }
func (fakePeer) Received(port uint16) int64                               { return 0 }
func (fakePeer) Conns(port uint16) []stack.ConnStatus                     { return nil }
func (fakePeer) SetUserTimeout(port uint16, d time.Duration) (int, error) { return 1, nil }

// fakeConn "sends" a segment the fault layer drops and retransmits it with
// a doubling interval until Read gives up after 3 s.
type fakeConn struct{ env *fakeEnv }

func (c *fakeConn) emit(retransmit bool) {
	data := tcpPacket(client, peer, packet.FlagPSH|packet.FlagACK, 1001, 5001, 502, 21)
	var p packet.Packet
	packet.Parse(packet.In, data, &p)
	d := c.env.ctl.Decide(&p)
	c.env.obs.Observe(&fault.Event{Time: c.env.clock.Now(), Packet: &p, Data: data, Decision: d, Comment: c.env.ctl.Comment(d)})
}

func (c *fakeConn) Write(p []byte) (int, error) { c.emit(false); return len(p), nil }
func (c *fakeConn) Read(p []byte) (int, error) {
	for _, d := range []time.Duration{200, 200, 400, 800} {
		c.env.clock.Advance(d * time.Millisecond)
		c.emit(true)
	}
	c.env.clock.Advance(1400 * time.Millisecond)
	return 0, c.env.readErr
}
func (c *fakeConn) SetDeadline(t time.Duration) error { return nil }
func (c *fakeConn) Close() error                      { return nil }
func (c *fakeConn) Info() ConnInfo                    { return ConnInfo{State: "ESTABLISHED"} }

// fakeScenario sends into a dead link like timeout does.
func fakeScenario() Scenario {
	return Scenario{
		Name: "fake", Summary: "a scripted timeout",
		Params: []Param{{Name: "retries2", Kind: KindInt, Default: "3", Help: "h"}},
		Run: func(ctx context.Context, env runEnv, p Params, r *recorder) error {
			if err := env.SetSysctl("net.ipv4.tcp_retries2", "3"); err != nil {
				return err
			}
			c, err := env.Dial(ctx, 80, SockOpts{UserTimeout: time.Second})
			if err != nil {
				return err
			}
			defer c.Close()
			if _, err := env.AddFault("drop"); err != nil {
				return err
			}
			r.Anchor("request sent")
			if _, err := c.Write(request404); err != nil {
				return outcomeOf(ctx, r, "send", err)
			}
			_, err = c.Read(make([]byte, 10))
			return outcomeOf(ctx, r, "recv", err)
		},
		Expect: func(p Params, kernel bool) Theory {
			return Theory{Outcome: "ETIMEDOUT", At: 3 * time.Second, Checks: []Check{
				countCheck("retransmissions", "in", "retransmit", 4, 4, 4, "scripted"),
				backoffCheck("backoff ratio", "in", "retransmit", 1, 2, 1.9, 2.1, "scripted"),
			}}
		},
	}
}

func TestRunWithRecordsEverything(t *testing.T) {
	var env *fakeEnv
	pcap := filepath.Join(t.TempDir(), "run.pcapng")
	rep, err := runWith(context.Background(), fakeScenario(), Params{}, Options{Clock: ClockVirtual, Seed: 9, PcapPath: pcap, Faults: []string{"delay 1ms dir=out"}}, newFakeFactory(&env))
	if err != nil {
		t.Fatal(err)
	}
	if !env.closed {
		t.Error("environment not closed")
	}
	if env.sysctls["net.ipv4.tcp_retries2"] != "3" {
		t.Errorf("sysctls = %v", env.sysctls)
	}
	if rep.Outcome != "ETIMEDOUT" || rep.Verdict != VerdictPass || rep.Client != "gvisor" || rep.Clock != ClockVirtual || rep.Seed != 9 {
		var b bytes.Buffer
		rep.WriteTable(&b)
		t.Fatalf("report:\n%s", b.String())
	}
	if got := rep.OutcomeAt - rep.Anchor; got != 3*time.Second {
		t.Errorf("outcome %s after the anchor, want 3s on the fake clock", got)
	}
	if len(rep.Params) != 1 || rep.Params[0] != (ParamValue{"retries2", "3"}) {
		t.Errorf("params = %v", rep.Params)
	}
	if len(rep.Faults) != 2 || rep.Faults[0].Spec != "delay 1ms dir=out" || rep.Faults[1].Spec != "drop" || !rep.Faults[1].Outage {
		t.Errorf("faults = %+v", rep.Faults)
	}
	var kinds []string
	for _, ev := range rep.Timeline {
		if ev.Kind != EventPacket {
			kinds = append(kinds, ev.Kind)
		}
		// A gVisor client has no namespace: the timeline must not say so.
		if ev.Kind == EventSysctl && (strings.Contains(ev.Text, "namespace)") && !strings.Contains(ev.Text, "no namespace") || !strings.Contains(ev.Text, "TCPMaxRetriesOption")) {
			t.Errorf("virtual sysctl event %q", ev.Text)
		}
	}
	want := "start fault-on sysctl connect accepted fault-on send recv outcome close end"
	if strings.Join(kinds, " ") != want {
		t.Errorf("timeline\n %s\nwant\n %s", strings.Join(kinds, " "), want)
	}
	if rep.Wall.Start.IsZero() || rep.Wall.Speedup <= 0 {
		t.Errorf("wall = %+v; virtual runs report a speed-up", rep.Wall)
	}
	// The capture has every packet the recorder saw.
	recs, err := capture.ReadFile(pcap)
	if err != nil {
		t.Fatal(err)
	}
	n := len(recs)
	if n != rep.Packets.Total || n != 5 {
		t.Errorf("capture has %d packets, report %d, want 5", n, rep.Packets.Total)
	}
}

func TestRunWithFailures(t *testing.T) {
	var env *fakeEnv
	failing := fakeScenario()
	failing.Run = func(ctx context.Context, env runEnv, p Params, r *recorder) error {
		return errors.New("the peer vanished")
	}
	silent := fakeScenario()
	silent.Run = func(ctx context.Context, env runEnv, p Params, r *recorder) error { return nil }
	notErrno := fakeScenario()
	tests := []struct {
		name    string
		sc      Scenario
		opts    Options
		setup   func()
		wantErr string
		report  bool
	}{
		{"scenario error", failing, Options{}, nil, "the peer vanished", true},
		{"no outcome", silent, Options{}, nil, "without an outcome", true},
		{"bad extra fault", fakeScenario(), Options{Faults: []string{"explode"}}, nil, "unknown action", false},
		{"unwritable capture", fakeScenario(), Options{PcapPath: "/nonexistent/dir/x.pcapng"}, nil, "x.pcapng", false},
		{"not an errno", notErrno, Options{}, nil, "recv:", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			factory := newFakeFactory(&env)
			if tt.name == "not an errno" {
				inner := factory
				factory = func(ctx context.Context, cfg envConfig) (envCloser, error) {
					e, err := inner(ctx, cfg)
					env.readErr = errors.New("agent died")
					return e, err
				}
			}
			rep, err := runWith(context.Background(), tt.sc, Params{}, tt.opts, factory)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
			if (rep != nil) != tt.report {
				t.Fatalf("report = %v, want one: %v", rep != nil, tt.report)
			}
			if rep != nil && (rep.Verdict != VerdictError || rep.Error == "") {
				t.Errorf("verdict %q error %q", rep.Verdict, rep.Error)
			}
		})
	}
}

func TestRunErrors(t *testing.T) {
	p := DefaultParams(fakeScenario())
	tests := []struct {
		name, scenario string
		params         Params
		opts           Options
		want           string
	}{
		{"unknown scenario", "nope", Params{}, Options{}, "unknown scenario \"nope\"; `unplug scenarios` lists them: timeout, brief-outage"},
		{"bad clock", "timeout", Params{}, Options{Clock: "sundial"}, `clock "sundial": use real or virtual`},
		{"kernel only", "sendbuf-full", Params{}, Options{Clock: ClockVirtual}, "needs the host kernel"},
		{"params of another scenario", "timeout", p, Options{Clock: ClockVirtual}, "parsed for another scenario"},
	}
	for _, tt := range tests {
		rep, err := Run(context.Background(), tt.scenario, tt.params, tt.opts)
		if rep != nil || err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: Run = %v, %v; want one line containing %q", tt.name, rep, err, tt.want)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the progress goroutine, which
// signals each write.
type syncBuffer struct {
	mu    sync.Mutex
	b     bytes.Buffer
	wrote chan struct{}
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case s.wrote <- struct{}{}:
	default:
	}
	return s.b.Write(p)
}

func TestProgress(t *testing.T) {
	clock := faketime.NewManualClock()
	rec := newRecorder()
	rec.begin(clock)
	clock.Advance(time.Second)
	rec.Anchor("request sent")
	clock.Advance(2500 * time.Millisecond)
	th := Theory{Outcome: "ETIMEDOUT", At: 6 * time.Second}
	buf := &syncBuffer{wrote: make(chan struct{}, 1)}
	stop := startProgress(buf, "timeout", rec, th, 0, time.Millisecond)
	<-buf.wrote
	stop()
	out := buf.b.String()
	if !strings.Contains(out, "\rtimeout: 3.5 s · 0 retransmissions · ETIMEDOUT expected in ~3.5 s\x1b[K") || !strings.HasSuffix(out, "\r\x1b[K") {
		t.Errorf("progress output %q", out)
	}
	l := live{now: 9 * time.Second, anchor: time.Second, anchorLabel: "x", retransmits: 6, lastInterval: 3200 * time.Millisecond}
	if got := progressLine("timeout", l, th); got != "timeout: 9.0 s · 6 retransmissions · last backoff 3.2s · ETIMEDOUT expected 2.0 s ago" {
		t.Errorf("progressLine = %q", got)
	}
	if stop := startProgress(nil, "x", rec, th, 0, time.Millisecond); stop == nil {
		t.Error("nil writer")
	} else {
		stop()
	}
}
