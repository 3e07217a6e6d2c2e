package scenarios

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/unplug-dev/unplug/internal/capture"
	"github.com/unplug-dev/unplug/stack/fault"
)

// Clocks a scenario can run on.
const (
	// ClockReal runs the client on the host kernel's TCP in a private
	// network namespace, in real time.
	ClockReal = "real"
	// ClockVirtual runs a gVisor client against the peer on a manual
	// clock: minutes of backoff take milliseconds.
	ClockVirtual = "virtual"
)

// Options configure Run.
type Options struct {
	// Clock is ClockReal (the default when empty) or ClockVirtual.
	Clock string
	// Seed drives the fault layer's random draws (loss, jitter).
	Seed uint64
	// PcapPath, if set, is where every packet is written as pcapng.
	PcapPath string
	// Progress, if not nil, receives a live one-line status (rewritten
	// with \r) once a run has lasted a few seconds: elapsed time,
	// retransmissions so far, the last backoff interval, and the time to
	// the expected outcome. Pass a terminal, not a file.
	Progress io.Writer
	// Faults are extra fault rules installed at the start, on top of the
	// scenario's own.
	Faults []string
	// LinkDelay is, on the virtual clock, the one-way delay of the
	// virtual link (so gVisor's RTO gets real RTT samples); 0 = none.
	LinkDelay time.Duration
	// StepIn and StepOut, on the virtual clock, make the run stop at each
	// timer and packet, describe it on StepOut and wait for a command on
	// StepIn (see internal/vlink.Stepper); nil = run freely.
	StepIn  io.Reader
	StepOut io.Writer
}

// envCloser is an environment Run can tear down.
type envCloser interface {
	runEnv
	Close() error
}

// envConfig is what an environment constructor gets from Run.
type envConfig struct {
	// Recorder must be started (begin) with the environment's clock
	// before any packet flows.
	Recorder *recorder
	// Observer sees every packet: the recorder, and a capture if asked.
	Observer fault.Observer
	// Seed for the fault layer.
	Seed uint64
	// Pcap is true when a capture is attached (virtual mode wants
	// nanosecond timestamps).
	Pcap bool
	// Virtual mode only: Options.LinkDelay, StepIn and StepOut.
	LinkDelay time.Duration
	StepIn    io.Reader
	StepOut   io.Writer
}

// envFactory builds an environment.
type envFactory func(ctx context.Context, cfg envConfig) (envCloser, error)

// The progress line shows once a run has lasted progressAfter, and is
// rewritten every progressEvery.
const (
	progressAfter = 2 * time.Second
	progressEvery = 250 * time.Millisecond
)

// Run runs the named scenario with params (from ParseParams; the zero
// Params means every default) and returns its report. The report is
// returned whenever the scenario started, also with an error (then
// Report.Verdict is "error" and Report.Error says why); a nil report means
// nothing ran (unknown scenario, bad option, no namespace).
func Run(ctx context.Context, name string, params Params, opts Options) (*Report, error) {
	sc, ok := Lookup(name)
	if !ok {
		return nil, fmt.Errorf("unknown scenario %q; `unplug scenarios` lists them: %s", name, strings.Join(Names(), ", "))
	}
	clock := opts.Clock
	if clock == "" {
		clock = ClockReal
	}
	var factory envFactory
	switch clock {
	case ClockReal:
		factory = newRealEnv
	case ClockVirtual:
		if sc.Kernel {
			return nil, fmt.Errorf("scenario %s needs the host kernel (its behaviour is Linux's, not gVisor's); run it on the real clock (ClockReal)", sc.Name)
		}
		factory = newVirtualEnv
		if sc.Streams && opts.LinkDelay == 0 {
			opts.LinkDelay = DefaultStreamDelay
		}
	default:
		return nil, fmt.Errorf("clock %q: use %s or %s", opts.Clock, ClockReal, ClockVirtual)
	}
	opts.Clock = clock
	return runWith(ctx, sc, params, opts, factory)
}

// runWith runs sc in the environment factory builds.
func runWith(ctx context.Context, sc Scenario, params Params, opts Options, factory envFactory) (*Report, error) {
	if params.decl == nil {
		params = DefaultParams(sc)
	} else if !sameDecl(params.decl, sc.Params) {
		return nil, fmt.Errorf("parameters were parsed for another scenario than %s", sc.Name)
	}
	for _, f := range opts.Faults {
		if _, err := fault.ParseSpec(f); err != nil {
			return nil, err
		}
	}
	rec := newRecorder()
	var obs fault.Observer = rec
	var pcap *capture.Writer
	if opts.PcapPath != "" {
		var copts []capture.Option
		if opts.Clock == ClockVirtual {
			copts = append(copts, capture.Nanoseconds())
		}
		w, err := capture.Create(opts.PcapPath, copts...)
		if err != nil {
			return nil, err
		}
		pcap = w
		obs = fault.Join(rec, w)
	}
	wallStart := time.Now()
	env, err := factory(ctx, envConfig{
		Recorder: rec, Observer: obs, Seed: opts.Seed, Pcap: pcap != nil,
		LinkDelay: opts.LinkDelay, StepIn: opts.StepIn, StepOut: opts.StepOut,
	})
	if err != nil {
		if pcap != nil {
			pcap.Close()
		}
		return nil, err
	}
	rep := &Report{
		Scenario: sc.Name, Description: sc.Summary, Clock: opts.Clock, Seed: opts.Seed, LinkDelay: opts.LinkDelay,
		Params: params.List(), Client: "gvisor",
	}
	if env.Kernel() {
		rep.Client = "kernel"
	}
	theory := sc.Expect(params, env.Kernel())
	renv := &recordingEnv{runEnv: env, rec: rec}
	rec.anchorHook = renv.snapshotClient

	stopProgress := startProgress(opts.Progress, sc.Name, rec, theory, progressAfter, progressEvery)
	runErr := func() error {
		for _, f := range opts.Faults {
			if _, err := renv.AddFault(f); err != nil {
				return err
			}
		}
		return sc.Run(ctx, renv, params, rec)
	}()
	stopProgress()
	if runErr == nil && !rec.HasOutcome() {
		runErr = errors.New("the scenario ended without an outcome (scenario bug)")
	}
	rec.fill(rep)
	closeErr := env.Close()
	// The counts include the teardown's packets (the FIN exchanges), as
	// the capture does; the timeline says how many there were.
	all := rec.packetCounts()
	if n := all.Total - rep.Packets.Total; n > 0 && len(rep.Timeline) > 0 {
		note := Event{T: rep.Duration, Kind: EventNote, Text: fmt.Sprintf(
			"teardown: %d more packets (%d client → peer, %d peer → client) as the connections closed",
			n, all.In-rep.Packets.In, all.Out-rep.Packets.Out)}
		last := len(rep.Timeline) - 1 // the end stays last
		rep.Timeline = append(rep.Timeline[:last], note, rep.Timeline[last])
	}
	rep.Packets = all
	if pcap != nil {
		if err := pcap.Close(); err != nil && closeErr == nil {
			closeErr = err
		}
	}
	if runErr != nil {
		if ctx.Err() != nil {
			runErr = fmt.Errorf("interrupted: %w", runErr)
		}
		rep.Error = runErr.Error()
	}
	if sc.Precise != nil {
		theory = sc.Precise(params, conditionsOf(rep))
	}
	theory.evaluate(rep)
	rep.normalize()
	rep.Wall = Wall{Start: wallStart, Duration: time.Since(wallStart)}
	if opts.Clock == ClockVirtual && rep.Wall.Duration > 0 {
		rep.Wall.Speedup = float64(rep.Duration) / float64(rep.Wall.Duration)
	}
	if runErr != nil {
		return rep, fmt.Errorf("scenario %s: %w", sc.Name, runErr)
	}
	if closeErr != nil {
		return rep, fmt.Errorf("scenario %s: tear down: %w", sc.Name, closeErr)
	}
	return rep, nil
}

// sameDecl reports whether two parameter declarations are the same list.
func sameDecl(a, b []Param) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name {
			return false
		}
	}
	return true
}

// startProgress writes the live status line to w every `every` (wall time)
// once the run has lasted `after`, until the returned stop is called, which
// also erases the line. A nil w shows nothing.
func startProgress(w io.Writer, name string, rec *recorder, th Theory, after, every time.Duration) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	shown := false
	go func() {
		defer wg.Done()
		start := time.Now()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if time.Since(start) < after {
				continue
			}
			shown = true
			fmt.Fprintf(w, "\r%s\x1b[K", progressLine(name, rec.live(), th))
		}
	}()
	return func() {
		close(done)
		wg.Wait()
		if shown {
			fmt.Fprint(w, "\r\x1b[K")
		}
	}
}

// progressLine renders one status line.
func progressLine(name string, l live, th Theory) string {
	parts := []string{
		fmt.Sprintf("%s: %.1f s", name, l.now.Seconds()),
		fmt.Sprintf("%d retransmissions", l.retransmits),
	}
	if l.lastInterval > 0 {
		parts = append(parts, "last backoff "+fmtDur(l.lastInterval))
	}
	switch {
	case l.hasOutcome:
		parts = append(parts, l.outcome)
	case th.At > 0 && l.anchorLabel != "":
		left := l.anchor + th.At - l.now
		if left > 0 {
			parts = append(parts, fmt.Sprintf("%s expected in ~%.1f s", th.Outcome, left.Seconds()))
		} else {
			parts = append(parts, fmt.Sprintf("%s expected %.1f s ago", th.Outcome, (-left).Seconds()))
		}
	}
	return strings.Join(parts, " · ")
}
