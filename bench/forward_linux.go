package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/tun"
)

// The forwarding comparison puts unplug where a user would otherwise put
// toxiproxy: between a kernel client and a real upstream server, both on
// the loopback of one private namespace. Each forwarder runs as a program
// of its own, so the CPU time read from /proc/PID/stat is the forwarder's
// alone; the client runs in this process, the upstreams in a third
// (startUpstreams).
const (
	fwdPortUnplug = 7100 // + 0 discard, 1 source, 2 echo: the peer's --forward ports
	fwdPortToxi   = 7200 // + 0, 1, 2: toxiproxy's listeners
	toxiAPIPort   = 7299 // toxiproxy's HTTP API, on the namespace's loopback
)

// forwarder is one forwarding program under test.
type forwarder struct {
	name string
	// addr returns the address a client dials for upstream i (0 discard,
	// 1 source, 2 echo).
	addr func(i int) string
	pid  int
	stop func()
}

// cpu returns the forwarder's user+system CPU time so far.
func (f *forwarder) cpu() (time.Duration, error) { return processCPU(f.pid) }

// fwdEnv is the namespace of the forwarding comparison with its three
// upstreams (discard, source, echo) on loopback, served by a program of
// their own (startUpstreams).
type fwdEnv struct {
	ns            *tun.Namespace
	dir           string
	upstreams     [3]string
	stopUpstreams func()
}

func newFwdEnv(ctx context.Context, opts Options) (*fwdEnv, error) {
	// unplug serve makes its own TUN (tun.DefaultName) with addresses; the
	// namespace's own device stays idle and unaddressed.
	ns, err := tun.NewNamespace(ctx, tun.NamespaceConfig{
		TUN:     tun.Config{Name: "benchfwd0", MTU: opts.MTU},
		Sysctls: map[string]string{"net.ipv6.conf.default.disable_ipv6": "1"},
	})
	if err != nil {
		return nil, fmt.Errorf("create the forwarding namespace: %w", err)
	}
	e := &fwdEnv{ns: ns}
	if e.dir, err = os.MkdirTemp("", "unplug-bench-fwd-"); err != nil {
		e.close()
		return nil, err
	}
	var ls [3]net.Listener
	defer func() {
		for _, l := range ls {
			if l != nil {
				l.Close()
			}
		}
	}()
	for i := range ls {
		if ls[i], err = listenLoopback(ns); err != nil {
			e.close()
			return nil, err
		}
		e.upstreams[i] = ls[i].Addr().String()
	}
	if e.stopUpstreams, err = startUpstreams(ls); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

// upstream is upstream i's address on the namespace's loopback.
func (e *fwdEnv) upstream(i int) string { return e.upstreams[i] }

func (e *fwdEnv) close() {
	if e.stopUpstreams != nil {
		e.stopUpstreams()
	}
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
	e.ns.Close()
}

// dialer returns a dial function for f's upstream i, from inside the
// namespace.
func (e *fwdEnv) dialer(f *forwarder, i int) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return e.ns.Dial(ctx, "tcp4", f.addr(i), nil)
	}
}

// start runs argv inside the namespace and waits until ready answers; the
// program is found by a marker in its command line (a path in e.dir).
func (e *fwdEnv) start(ctx context.Context, name, marker string, argv []string, ready func(context.Context) error) (*forwarder, error) {
	runCtx, cancel := context.WithCancel(ctx)
	exited := make(chan error, 1)
	var out limitedBuffer
	go func() {
		code, err := e.ns.Run(runCtx, nil, &out, &out, argv)
		if err == nil && code != 0 {
			err = fmt.Errorf("exit status %d", code)
		}
		exited <- err
	}()
	stop := func() {
		cancel()
		<-exited
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := ready(ctx); err == nil {
			break
		}
		select {
		case err := <-exited:
			exited <- err
			cancel()
			return nil, fmt.Errorf("%s exited before it was ready (%v): %s", name, err, out.String())
		case <-ctx.Done():
			stop()
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("%s not ready after 30 s: %s", name, out.String())
		}
	}
	pid, err := findProcess(marker)
	if err != nil {
		stop()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &forwarder{name: name, pid: pid, stop: stop}, nil
}

// startUnplug runs `unplug serve --forward` for the three upstreams.
func (e *fwdEnv) startUnplug(ctx context.Context, opts Options) (*forwarder, error) {
	ctl := filepath.Join(e.dir, "control.sock")
	argv := append(slices.Clone(opts.ServeCommand), "--tun", tun.DefaultName, "--mtu", strconv.Itoa(opts.MTU), "--no-ipv6", "--control", ctl)
	for i := range e.upstreams {
		argv = append(argv, "--forward", fmt.Sprintf("%d=%s", fwdPortUnplug+i, e.upstream(i)))
	}
	addr := func(i int) string { return netip.AddrPortFrom(stack.DefaultAddr4, uint16(fwdPortUnplug+i)).String() }
	f, err := e.start(ctx, "unplug serve", ctl, argv, func(ctx context.Context) error { return dialEcho(ctx, e, addr(2)) })
	if err != nil {
		return nil, err
	}
	f.addr = addr
	return f, nil
}

// startToxiproxy runs toxiproxy-server with one proxy per upstream and no
// toxics: the cost of the proxy itself.
func (e *fwdEnv) startToxiproxy(ctx context.Context, bin string) (*forwarder, error) {
	type proxy struct {
		Name     string `json:"name"`
		Listen   string `json:"listen"`
		Upstream string `json:"upstream"`
		Enabled  bool   `json:"enabled"`
	}
	var proxies []proxy
	for i := range e.upstreams {
		proxies = append(proxies, proxy{Name: fmt.Sprintf("up%d", i), Listen: fmt.Sprintf("127.0.0.1:%d", fwdPortToxi+i), Upstream: e.upstream(i), Enabled: true})
	}
	b, err := json.Marshal(proxies)
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(e.dir, "toxiproxy.json")
	if err := os.WriteFile(cfg, b, 0o644); err != nil {
		return nil, err
	}
	argv := []string{bin, "-host", "127.0.0.1", "-port", strconv.Itoa(toxiAPIPort), "-config", cfg}
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", fwdPortToxi+i) }
	f, err := e.start(ctx, "toxiproxy-server", cfg, argv, func(ctx context.Context) error { return dialEcho(ctx, e, addr(2)) })
	if err != nil {
		return nil, err
	}
	f.addr = addr
	return f, nil
}

// dialEcho succeeds when a byte sent to addr comes back: the forwarder is
// up and reaches the echo upstream.
func dialEcho(ctx context.Context, e *fwdEnv, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	c, err := e.ns.Dial(ctx, "tcp4", addr, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte{'r'}); err != nil {
		return err
	}
	_, err = io.ReadFull(c, make([]byte, 1))
	return err
}

// fwdResult is one forwarder's figures.
type fwdResult struct {
	up, down       float64 // MB/s
	upCPU, downCPU float64 // CPU seconds per GB moved
	rtt50, rtt99   time.Duration
	// rtt says the round trips were measured (their row was wanted).
	rtt bool
}

// measureForwarder runs the upload, download and ping-pong through f, each
// only when its row is wanted.
func measureForwarder(ctx context.Context, opts Options, e *fwdEnv, f *forwarder) (fwdResult, error) {
	var r fwdResult
	for _, x := range []struct {
		row      string
		xfer     transfer
		upstream int
		rate     *float64
		cpu      *float64
	}{{RowForwardUp, upload, 0, &r.up, &r.upCPU}, {RowForwardDown, download, 1, &r.down, &r.downCPU}} {
		if !opts.wants(x.row) {
			continue
		}
		c0, err := f.cpu()
		if err != nil {
			return r, err
		}
		start := time.Now()
		rate, err := x.xfer(ctx, e.dialer(f, x.upstream), opts.Duration)
		if err != nil {
			return r, fmt.Errorf("%s: %w", f.name, err)
		}
		elapsed := time.Since(start)
		c1, err := f.cpu()
		if err != nil {
			return r, err
		}
		*x.rate = rate / 1e6
		if gb := rate * elapsed.Seconds() / 1e9; gb > 0 {
			*x.cpu = (c1 - c0).Seconds() / gb
		}
	}
	if !opts.wants(RowForwardRTT) {
		return r, nil
	}
	rtts, err := pingPong(ctx, e.dialer(f, 2), opts.PingPongs)
	if err != nil {
		return r, fmt.Errorf("%s: %w", f.name, err)
	}
	r.rtt50, r.rtt99, r.rtt = percentile(rtts, 50), percentile(rtts, 99), true
	return r, nil
}

// forwardRows compares unplug serve --forward with toxiproxy in one
// namespace, both directions and the round trip, the two alternating
// round by round; medians.
func forwardRows(ctx context.Context, opts Options) []Row {
	up := Row{Name: RowForwardUp, Metric: "forward client → upstream vs toxiproxy", Unit: "MB/s", Target: fmt.Sprintf(">= %.1f×", targetVsToxiproxy)}
	down := Row{Name: RowForwardDown, Metric: "forward upstream → client vs toxiproxy", Unit: "MB/s", Target: fmt.Sprintf(">= %.1f×", targetVsToxiproxy)}
	rtt := Row{Name: RowForwardRTT, Metric: "forward 1-byte round trip p50 vs toxiproxy", Unit: "µs", Target: "<= 1.00×"}
	rows := []Row{up, down, rtt}
	fail := func(err error) []Row {
		for i := range rows {
			rows[i] = failed(rows[i], err)
		}
		return rows
	}
	if opts.ServeCommand == nil {
		return fail(fmt.Errorf("%w: needs the unplug binary (Options.ServeCommand; `unplug bench` sets it)", errSkipped))
	}
	bin := opts.Toxiproxy
	if bin == "" {
		var err error
		if bin, err = lookToxiproxy(); err != nil {
			return fail(err)
		}
	}
	fmt.Fprintln(opts.Progress, "bench: forwarding, unplug serve --forward and toxiproxy, both directions")
	e, err := newFwdEnv(ctx, opts)
	if err != nil {
		return fail(err)
	}
	defer e.close()
	uf, err := e.startUnplug(ctx, opts)
	if err != nil {
		return fail(err)
	}
	defer uf.stop()
	tf, err := e.startToxiproxy(ctx, bin)
	if err != nil {
		return fail(err)
	}
	defer tf.stop()
	var us, ts []fwdResult
	for i := range opts.Rounds {
		first, second := uf, tf
		if i%2 == 1 {
			first, second = tf, uf
		}
		for _, f := range []*forwarder{first, second} {
			r, err := measureForwarder(ctx, opts, e, f)
			if err != nil {
				return fail(err)
			}
			if f == uf {
				us = append(us, r)
			} else {
				ts = append(ts, r)
			}
		}
	}
	med := func(rs []fwdResult, get func(fwdResult) float64) float64 {
		var v []float64
		for _, r := range rs {
			v = append(v, get(r))
		}
		return median(v)
	}
	fill := func(row *Row, get, cpu func(fwdResult) float64, higherBetter bool) {
		row.Unplug, row.Baseline = med(us, get), med(ts, get)
		row.Ratio = row.Unplug / row.Baseline
		ok := row.Ratio <= 1
		if higherBetter {
			ok = row.Ratio >= targetVsToxiproxy
		}
		if cpu != nil {
			uc, tc := med(us, cpu), med(ts, cpu)
			row.Note = fmt.Sprintf("CPU of the forwarding process: unplug %.2f s/GB, toxiproxy %.2f s/GB (target: no more than toxiproxy's); ", uc, tc)
			ok = ok && uc <= tc
		}
		row.Note += fmt.Sprintf("both forwarders and the upstreams as programs of their own in one namespace, the client in the measuring process, all on its loopback; %d rounds alternating, medians", opts.Rounds)
		judge(row, ok)
	}
	fill(&rows[0], func(r fwdResult) float64 { return r.up }, func(r fwdResult) float64 { return r.upCPU }, true)
	fill(&rows[1], func(r fwdResult) float64 { return r.down }, func(r fwdResult) float64 { return r.downCPU }, true)
	fill(&rows[2], func(r fwdResult) float64 { return micros(r.rtt50) }, nil, false)
	if len(us) > 0 && us[0].rtt {
		p99 := func(r fwdResult) float64 { return micros(r.rtt99) }
		rows[2].Note = fmt.Sprintf("p99 unplug %.1f µs, toxiproxy %.1f µs; %d round trips per round; ", med(us, p99), med(ts, p99), opts.PingPongs) + rows[2].Note
	}
	return rows
}

// lookToxiproxy finds toxiproxy-server on PATH.
func lookToxiproxy() (string, error) {
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		p := filepath.Join(dir, "toxiproxy-server")
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: toxiproxy-server is not on PATH: build it with `go build -o toxiproxy-server github.com/Shopify/toxiproxy/v2/cmd/server` in this repository (a tool dependency) and pass --toxiproxy PATH", errSkipped)
}

// findProcess returns the PID of the one process whose command line
// contains marker.
func findProcess(marker string) (int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var found []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.Contains(b, []byte(marker)) {
			found = append(found, pid)
		}
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("find the process started with %s: %d candidates", marker, len(found))
	}
	return found[0], nil
}

// processCPU reads utime + stime of pid (/proc/PID/stat, in clock ticks of
// 1/100 s on Linux).
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read the forwarder's CPU time: %w", err)
	}
	// The command name (field 2) may contain spaces; fields after it are
	// counted from its closing parenthesis.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("read the forwarder's CPU time: malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("read the forwarder's CPU time: short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	st, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("read the forwarder's CPU time: bad /proc/%d/stat", pid)
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(ut+st) * tick, nil
}
