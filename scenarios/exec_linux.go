package scenarios

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/unplug-dev/unplug/internal/sockdiag"
	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/tun"
)

// Exec runs a program inside a fresh private network namespace whose only
// way out is the TUN to the peer (198.18.0.2, with its services and
// forwards), with the given fault rules on the link, and returns the
// program's exit code — and, with o.Report, the report of every TCP
// connection it made. Nothing in the caller's namespace changes.
//
// Signals on o.Signals are passed on to the program; if it has not exited
// o.Grace later, it is killed. Cancelling ctx kills it at once. Either
// way Exec returns only after the program exited and everything is torn
// down.
func Exec(ctx context.Context, o ExecOptions) (ExecResult, error) {
	cfg := tun.DefaultConfig()
	ns, err := tun.NewNamespace(ctx, tun.NamespaceConfig{TUN: cfg, Sysctls: o.Sysctls})
	if err != nil {
		return ExecResult{}, fmt.Errorf("create the private network namespace: %w", err)
	}
	defer ns.Close()
	rec := newRecorder()
	clock := tcpip.NewStdClock()
	rec.begin(clock)
	var tracker *connTracker
	var kv *kernelView
	obs := o.Observer
	if o.Report {
		kv = startKernelView(ns, o.SampleInterval)
		defer kv.stop()
		tracker = newConnTracker(rec)
		tracker.onNew = kv.rescan
		obs = fault.Join(tracker, o.Observer)
	}
	svc := peerServices()
	svc.Forwards = o.Forwards
	peer, err := stack.New(ctx, stack.Options{
		Device:      ns.Device(),
		Clock:       clock,
		Seed:        o.Seed,
		Observer:    obs,
		Services:    svc,
		Transparent: o.Transparent,
	})
	if err != nil {
		return ExecResult{}, fmt.Errorf("start the peer: %w", err)
	}
	defer peer.Close()
	if o.Transparent {
		// Every destination goes through the TUN; the peer answers for
		// all of them.
		for _, route := range [][]string{
			{"ip", "route", "add", "default", "dev", cfg.Name},
			{"ip", "-6", "route", "add", "default", "dev", cfg.Name},
		} {
			if code, err := ns.Run(ctx, nil, nil, o.Stderr, route); err != nil || code != 0 {
				return ExecResult{}, fmt.Errorf("--transparent: add a default route inside the namespace (%v, exit %d); is iproute2 installed?", err, code)
			}
		}
	}
	// The rules count after= and for= from the program's start.
	for _, sp := range o.Faults {
		id := peer.Controller().Add(sp)
		rec.faultAdded(id, sp)
	}
	prog, err := ns.Start(o.Stdin, o.Stdout, o.Stderr, o.Argv)
	if err != nil {
		return ExecResult{Code: tun.StartCode(err)}, err
	}
	stopped := supervise(ctx, prog, o)
	code, werr := prog.Wait()
	exited := rec.Now()
	res := ExecResult{Code: code}
	if werr != nil {
		return res, werr
	}
	if o.Report {
		// The kernel closes the program's sockets as it exits: let
		// those FINs and RSTs cross the link and the sampler see them.
		time.Sleep(max(4*kv.interval, 200*time.Millisecond))
		kv.stop()
		res.Report = buildExecReport(rec, tracker, kv, ns.Sysctl, o, code, exited, stopped)
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	return res, nil
}

// supervised is a running program as supervise needs it: a
// *tun.Program, or the reference run's process (execref_linux.go).
type supervised interface {
	Done() <-chan struct{}
	Signal(sig syscall.Signal) error
	Kill()
}

// supervise waits for the program to exit, passing signals on, stopping
// it at o.Timeout and killing it when a grace period runs out or ctx is
// cancelled. It returns why unplug stopped it ("" if it exited itself).
func supervise(ctx context.Context, prog supervised, o ExecOptions) string {
	grace := o.Grace
	if grace <= 0 {
		grace = DefaultGrace
	}
	var timeout <-chan time.Time
	if o.Timeout > 0 {
		t := time.NewTimer(o.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	var kill <-chan time.Time
	stopped := ""
	for {
		select {
		case <-prog.Done():
			return stopped
		case <-ctx.Done():
			prog.Kill()
			<-prog.Done()
			return "cancelled: SIGKILL"
		case sig := <-o.Signals:
			s, ok := sig.(syscall.Signal)
			if !ok {
				continue
			}
			if kill != nil && (s == syscall.SIGINT || s == syscall.SIGTERM) {
				// A second request to stop: at once.
				prog.Kill()
				stopped += fmt.Sprintf(", %v again: SIGKILL", s)
				continue
			}
			if err := prog.Signal(s); err != nil && !errors.Is(err, os.ErrProcessDone) {
				fmt.Fprintf(o.Stderr, "unplug: pass %v on: %v\n", s, err)
			}
			if s == syscall.SIGTERM || s == syscall.SIGINT || s == syscall.SIGHUP || s == syscall.SIGQUIT {
				if stopped == "" {
					stopped = fmt.Sprintf("%v passed on", s)
				}
				if kill == nil {
					kill = time.After(grace)
				}
			}
		case <-timeout:
			timeout = nil
			stopped = fmt.Sprintf("--timeout %s: SIGTERM", o.Timeout)
			prog.Signal(syscall.SIGTERM)
			if kill == nil {
				kill = time.After(grace)
			}
		case <-kill:
			kill = nil
			stopped += fmt.Sprintf(", still running after %s: SIGKILL", grace)
			prog.Kill()
		}
	}
}

// kernelView samples the program's sockets through sock_diag in the
// namespace, and reads their options from the program with pidfd_getfd.
type kernelView struct {
	sampler  *sockdiag.Sampler
	tracker  *sockdiag.Tracker
	reader   *sockdiag.OptionsReader
	nl       *os.File
	interval time.Duration
	table    string // how each sample reads the table, when not the tracker's default
	why      string // why there is no view, if there is none
	cancel   context.CancelFunc
	done     chan struct{}
}

func startKernelView(ns *tun.Namespace, interval time.Duration) *kernelView {
	kv := newKernelView(interval)
	nl, err := ns.Socket(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return kv.none(fmt.Errorf("sock_diag socket: %w", err))
	}
	ino, err := sockdiag.NetnsInode(ns.PID())
	if err != nil {
		nl.Close()
		return kv.none(err)
	}
	ehash := 0
	if v, err := ns.Sysctl("net.ipv4.tcp_ehash_entries"); err == nil {
		ehash, _ = strconv.Atoi(v)
	}
	return kv.start(nl, ino, ehash)
}

// newKernelView returns a view that does not sample yet; start or none
// completes it.
func newKernelView(interval time.Duration) *kernelView {
	if interval <= 0 {
		interval = sockdiag.DefaultInterval
	}
	return &kernelView{interval: interval, done: make(chan struct{})}
}

// none ends kv as no view, saying why.
func (kv *kernelView) none(err error) *kernelView {
	kv.why = fmt.Sprintf("no kernel view: %v", err)
	close(kv.done)
	return kv
}

// start samples the namespace whose inode is ino through its sock_diag
// socket nl until stop (its lifetime; not a context's). ehash is the size
// of the namespace's own TCP table, 0 when it shares the host's.
func (kv *kernelView) start(nl *os.File, ino uint64, ehash int) *kernelView {
	kv.nl = nl
	kv.reader = sockdiag.NewOptionsReader(ino)
	// A full dump walks the namespace's whole TCP table. With a table of
	// its own (tun.NewNamespace's default) that costs about 0.1 ms, so
	// every poll is a full dump and sees every socket; sharing the host's
	// (milliseconds a dump) the tracker does one every 200 ms and single
	// lookups in between, and a new connection on the link (rescan) makes
	// the next one full.
	kv.tracker = sockdiag.NewTracker(sockdiag.NewDumper(nl))
	if ehash > 0 {
		kv.tracker.FullEvery, kv.table = -1, fmt.Sprintf("a full dump each time (the namespace's own %d-bucket TCP table)", ehash)
	}
	kv.sampler = sockdiag.NewSampler(kv.tracker.Dump, kv.reader.Options, kv.interval)
	ctx, cancel := context.WithCancel(context.Background())
	kv.cancel = cancel
	go func() {
		defer close(kv.done)
		kv.sampler.Run(ctx)
	}()
	return kv
}

// rescan makes the next sample a full dump: a new connection appeared.
func (kv *kernelView) rescan() {
	if kv.tracker != nil {
		kv.tracker.Rescan()
	}
}

// stop ends the sampling; safe to call more than once.
func (kv *kernelView) stop() {
	if kv.cancel != nil {
		kv.cancel()
	}
	<-kv.done
	if kv.nl != nil {
		kv.nl.Close()
		kv.nl = nil
	}
}

// conns converts the sampler's series to the report's, on the
// recorder's clock.
func (kv *kernelView) conns(start time.Time) []KernelConn {
	if kv.sampler == nil {
		return nil
	}
	rel := func(t time.Time) time.Duration { return t.Sub(start) }
	var out []KernelConn
	for _, c := range kv.sampler.Conns() {
		k := KernelConn{Src: c.Src, Dst: c.Dst}
		for _, s := range append(c.Samples, c.Last) {
			ks := KernelSample{
				T: rel(s.At), State: s.State, Timer: s.Timer, TimerExpires: s.TimerExpires,
				Retransmits: s.Retransmits, Backoff: s.Backoff, Probes: s.Probes, RTO: s.RTO, RTT: s.RTT,
				Unacked: int(s.Unacked), SendQ: int(s.SendQ), Closed: s.Inode == 0 && s.State != sockdiag.StateSynSent,
			}
			// One entry per change that explains a timeout, plus the
			// last reading.
			if n := len(k.Samples); n > 0 && (k.Samples[n-1].T == ks.T || !kernelChanged(k.Samples[n-1], ks)) {
				if s.At.Equal(c.Last.At) && k.Samples[n-1].T != ks.T {
					k.Samples = append(k.Samples, ks)
				}
				continue
			}
			k.Samples = append(k.Samples, ks)
		}
		if c.Gone {
			k.Gone = rel(c.GoneAt)
		}
		if opt, ok := c.LastOptions(); ok {
			k.Settings = &TimeoutSettings{
				KeepAlive: opt.KeepAlive, KeepIdle: opt.KeepIdle, KeepIntvl: opt.KeepIntvl, KeepCnt: opt.KeepCnt,
				UserTimeout: opt.UserTimeout, SynRetries: opt.SynCnt, Source: "getsockopt",
			}
		}
		out = append(out, k)
	}
	return out
}

// kernelChanged reports whether b differs from a in what the report
// follows: state, timer kind, retransmissions, backoff, probes, RTO, the
// program closing the socket.
func kernelChanged(a, b KernelSample) bool {
	return a.State != b.State || a.Timer != b.Timer || a.Retransmits != b.Retransmits ||
		a.Backoff != b.Backoff || a.Probes != b.Probes || a.RTO != b.RTO || a.Closed != b.Closed
}

func buildExecReport(rec *recorder, tracker *connTracker, kv *kernelView, sysctl func(string) (string, error), o ExecOptions, code int, exited time.Duration, stopped string) *Report {
	rep := &Report{
		Scenario: "exec", Description: joinArgv(o.Argv), Clock: "real", Client: "kernel", Seed: o.Seed,
		Wall: Wall{Start: rec.start},
	}
	for _, sp := range o.Faults {
		rep.Params = append(rep.Params, ParamValue{Name: "fault", Value: sp.String()})
	}
	rec.fill(rep)
	rep.Wall.Duration = rep.Duration
	rep.AnchorLabel = "the program starts"
	info := &ExecInfo{Argv: o.Argv, ExitCode: code, ExitedAt: exited, Stopped: stopped}
	var defaults TimeoutSettings
	info.Sysctls, defaults = readSysctls(sysctl, "sysctl defaults")
	if kv.sampler != nil {
		info.KernelView = fmt.Sprintf("sock_diag every %s in the program's namespace", kv.interval)
		if kv.table != "" {
			info.KernelView += ", " + kv.table
		}
		info.KernelView += "; socket options read with pidfd_getfd + getsockopt"
		if err := kv.reader.Err(); err != nil {
			info.KernelView += fmt.Sprintf(" (options not readable: %v)", err)
		}
	} else {
		info.KernelView = kv.why
	}
	forwards := map[uint16]string{}
	for _, f := range o.Forwards {
		forwards[f.Port] = f.Target
	}
	info.Conns = tracker.buildConns(rep.Duration, exited, stopped, kv.conns(rec.start), defaults, describeUpstream(forwards, o.Transparent))
	rep.Exec = info
	rep.Outcome = fmt.Sprintf("exit %d", code)
	rep.OutcomeAt = exited
	rep.OutcomeDetail = execSummary(info)
	rep.evaluateExec(o.Expect)
	return rep
}
