package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/services"
)

// Targets, as the performance issue states them.
const (
	targetBulk       = 0.6   // client → peer / kernel loopback (issue 14)
	targetBulkDown   = 0.5   // peer → client / kernel loopback
	targetRules      = 0.95  // 10 non-matching rules / none
	targetPerConnKiB = 20.0  // Go memory per idle connection
	targetServe      = 100.0 // ms from start to accepting
	targetVirtual    = 10000 // simulated seconds per wall second
	// targetVsToxiproxy is the forwarding throughput unplug should reach
	// against toxiproxy, the proxy a user would pick instead (issue 14).
	targetVsToxiproxy = 1.5
)

// Run measures unplug against its baselines in namespaces it creates and
// removes, and returns the report. A measurement that fails becomes a
// failed row with the error as its note; Run itself fails only when ctx
// ends or the first namespace cannot be made.
func Run(ctx context.Context, opts Options) (*Report, error) {
	opts = opts.withDefaults()
	r := newReport(opts)
	if opts.wants(RowVirtual) {
		r.Rows = append(r.Rows, virtualRow(opts))
	}
	if opts.wants(RowBulk) || opts.wants(RowBulkDown) || opts.wants(RowBulkRules) || opts.wants(RowLatencyP50) || opts.wants(RowLatencyP99) || opts.wants(RowIperf) {
		rows, err := mainRows(ctx, opts)
		if err != nil {
			return nil, err
		}
		r.Rows = append(r.Rows, rows...)
	}
	if opts.wants(RowForwardUp) || opts.wants(RowForwardDown) || opts.wants(RowForwardRTT) {
		for _, row := range forwardRows(ctx, opts) {
			if opts.wants(row.Name) {
				r.Rows = append(r.Rows, row)
			}
		}
	}
	if opts.wants(RowConns) {
		r.Rows = append(r.Rows, connsRow(ctx, opts))
	}
	if opts.wants(RowServe) {
		r.Rows = append(r.Rows, serveRow(ctx, opts))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return r, nil
}

// failed turns a measurement error into a row.
func failed(row Row, err error) Row {
	row.Status = StatusFail
	if errors.Is(err, errSkipped) {
		row.Status = StatusSkip
	}
	row.Error = strings.TrimPrefix(err.Error(), errSkipped.Error()+": ")
	return row
}

// virtualRow measures virtual-time speed.
func virtualRow(opts Options) Row {
	row := Row{Name: RowVirtual, Metric: "virtual time (simulated/wall)", Unit: "×", Target: fmt.Sprintf(">= %d×", targetVirtual)}
	fmt.Fprintln(opts.Progress, "bench: virtual time")
	runs := 5
	if opts.Quick {
		runs = 1
	}
	sim, wall, err := virtualTimeout(runs)
	if err != nil {
		return failed(row, err)
	}
	row.Unplug = sim.Seconds() / wall.Seconds()
	row.Ratio = row.Unplug
	row.Note = fmt.Sprintf("gVisor's full retransmission timeout, %d× %.0f simulated s in %s of wall time", runs, sim.Seconds()/float64(runs), wall.Round(time.Millisecond))
	judge(&row, row.Unplug >= targetVirtual)
	return row
}

// mainRows runs the measurements that share one namespace and peer: bulk
// with and without rules, latency, and iperf3 through a forward.
func mainRows(ctx context.Context, opts Options) ([]Row, error) {
	fw := []services.Forward{{Port: iperfPort, Target: fmt.Sprintf("127.0.0.1:%d", iperfPort)}}
	e, err := newEnv(ctx, opts, envConfig{forwards: fw})
	if err != nil {
		return nil, err
	}
	defer e.close()
	l, err := e.listenLoopback()
	if err != nil {
		return nil, err
	}
	defer l.Close()
	el, err := e.listenLoopback()
	if err != nil {
		return nil, err
	}
	defer el.Close()
	sl, err := e.listenLoopback()
	if err != nil {
		return nil, err
	}
	defer sl.Close()
	go serveDiscard(l)
	go serveEcho(el)
	go serveSource(sl)
	toPeer := func(port int) func(context.Context) (net.Conn, error) {
		return func(ctx context.Context) (net.Conn, error) { return e.dial(ctx, peerAddr(port)) }
	}
	toLoop := func(l net.Listener) func(context.Context) (net.Conn, error) {
		return func(ctx context.Context) (net.Conn, error) { return e.dial(ctx, l.Addr().String()) }
	}
	var rows []Row
	if opts.wants(RowBulk) {
		fmt.Fprintln(opts.Progress, "bench: bulk transfer, peer and kernel loopback")
		rows = append(rows, bulkRow(ctx, opts, e, toPeer(services.DefaultDiscardPort), toLoop(l)))
	}
	if opts.wants(RowBulkDown) {
		fmt.Fprintln(opts.Progress, "bench: bulk transfer from the peer, peer and kernel loopback")
		rows = append(rows, bulkDownRow(ctx, opts, toPeer(services.DefaultSourcePort), toLoop(sl)))
	}
	if opts.wants(RowBulkRules) {
		fmt.Fprintln(opts.Progress, "bench: bulk transfer, 10 non-matching rules and none")
		rows = append(rows, rulesRow(ctx, opts, e, toPeer(services.DefaultDiscardPort)))
	}
	if opts.wants(RowLatencyP50) || opts.wants(RowLatencyP99) {
		fmt.Fprintln(opts.Progress, "bench: 1-byte ping-pong, peer echo and kernel loopback")
		for _, row := range latencyRows(ctx, opts, toPeer(services.DefaultEchoPort), toLoop(el)) {
			if opts.wants(row.Name) {
				rows = append(rows, row)
			}
		}
	}
	if opts.wants(RowIperf) {
		fmt.Fprintln(opts.Progress, "bench: iperf3 through the peer's forward and over loopback")
		rows = append(rows, iperfRow(ctx, opts, e))
	}
	return rows, nil
}

// bulkRow compares the peer's discard with kernel loopback.
func bulkRow(ctx context.Context, opts Options, e *env, peer, loop func(context.Context) (net.Conn, error)) Row {
	row := Row{Name: RowBulk, Metric: "bulk client → peer discard", Unit: "MB/s", Target: fmt.Sprintf(">= %.2f×", targetBulk)}
	var mss int64
	measured := func(on bool) error {
		if !on {
			mss = lastMSS.Load()
		}
		return nil
	}
	if err := pairedRounds(ctx, opts, &row, upload, peer, loop, measured); err != nil {
		return failed(row, err)
	}
	row.Note = fmt.Sprintf("client MSS %d through the peer; baseline: kernel loopback in the same namespace; %d rounds of %s transfers, alternating which goes first; medians, ratio = median of the rounds' ratios", mss, opts.Rounds, opts.Duration)
	judge(&row, row.Ratio >= targetBulk)
	return row
}

// bulkDownRow compares reading from the peer's source (gVisor sends, the
// kernel receives) with a source on kernel loopback.
func bulkDownRow(ctx context.Context, opts Options, peer, loop func(context.Context) (net.Conn, error)) Row {
	row := Row{Name: RowBulkDown, Metric: "bulk peer source → client", Unit: "MB/s", Target: fmt.Sprintf(">= %.2f×", targetBulkDown)}
	if err := pairedRounds(ctx, opts, &row, download, peer, loop, nil); err != nil {
		return failed(row, err)
	}
	row.Note = fmt.Sprintf("the peer's gVisor TCP sends, the kernel client reads; baseline: a source on kernel loopback in the same namespace; %d rounds of %s, alternating; ratio = median of the rounds' ratios", opts.Rounds, opts.Duration)
	judge(&row, row.Ratio >= targetBulkDown)
	return row
}

// rulesRow compares the peer's discard with 10 active non-matching rules
// against none.
func rulesRow(ctx context.Context, opts Options, e *env, peer func(context.Context) (net.Conn, error)) Row {
	row := Row{Name: RowBulkRules, Metric: "bulk with 10 non-matching rules", Unit: "MB/s", Target: fmt.Sprintf(">= %.2f×", targetRules)}
	ctl := e.peer.Controller()
	var ids []int
	rules := func(on bool) error {
		if !on {
			for _, id := range ids {
				ctl.Remove(id)
			}
			ids = ids[:0]
			return nil
		}
		for _, spec := range nonMatchingRules {
			id, err := ctl.AddString(spec)
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	}
	defer rules(false)
	if err := pairedRounds(ctx, opts, &row, upload, peer, peer, rules); err != nil {
		return failed(row, err)
	}
	row.Note = fmt.Sprintf("baseline: the same peer without rules; %d rounds, alternating which goes first; ratio = median of the rounds' ratios", opts.Rounds)
	judge(&row, row.Ratio >= targetRules)
	return row
}

// pairedRounds measures a against b opts.Rounds times, alternating which
// goes first so that a drifting load on the machine favours neither, and
// fills row with the medians and the median of the per-round ratios (each
// pair ran back to back, so its ratio is the least disturbed figure).
// setup, if not nil, is called with true before each a and false after.
func pairedRounds(ctx context.Context, opts Options, row *Row, xfer transfer, a, b func(context.Context) (net.Conn, error), setup func(bool) error) error {
	var av, bv, ratios []float64
	for i := range opts.Rounds {
		var x, y float64
		runA := func() error {
			if setup != nil {
				if err := setup(true); err != nil {
					return err
				}
				defer setup(false)
			}
			v, err := xfer(ctx, a, opts.Duration)
			x = v / 1e6
			return err
		}
		runB := func() error {
			v, err := xfer(ctx, b, opts.Duration)
			y = v / 1e6
			return err
		}
		first, second := runA, runB
		if i%2 == 1 {
			first, second = runB, runA
		}
		if err := first(); err != nil {
			return err
		}
		if err := second(); err != nil {
			return err
		}
		av, bv, ratios = append(av, x), append(bv, y), append(ratios, x/y)
	}
	row.Unplug, row.Baseline, row.Ratio = median(av), median(bv), median(ratios)
	return nil
}

// latencyRows reports ping-pong percentiles through the peer's echo and
// over loopback.
func latencyRows(ctx context.Context, opts Options, peer, loop func(context.Context) (net.Conn, error)) []Row {
	p50 := Row{Name: RowLatencyP50, Metric: "echo 1-byte round trip p50", Unit: "µs", Target: "report", Status: StatusInfo}
	p99 := Row{Name: RowLatencyP99, Metric: "echo 1-byte round trip p99", Unit: "µs", Target: "report", Status: StatusInfo}
	pr, err := pingPong(ctx, peer, opts.PingPongs)
	if err != nil {
		return []Row{failed(p50, err), failed(p99, err)}
	}
	br, err := pingPong(ctx, loop, opts.PingPongs)
	if err != nil {
		return []Row{failed(p50, err), failed(p99, err)}
	}
	for _, x := range []struct {
		row *Row
		p   float64
	}{{&p50, 50}, {&p99, 99}} {
		x.row.Unplug, x.row.Baseline = micros(percentile(pr, x.p)), micros(percentile(br, x.p))
		x.row.Ratio = x.row.Unplug / x.row.Baseline
	}
	p50.Note = fmt.Sprintf("%d round trips each; baseline: kernel loopback echo", opts.PingPongs)
	return []Row{p50, p99}
}

// iperfRow runs iperf3 through the peer's forward and directly.
func iperfRow(ctx context.Context, opts Options, e *env) Row {
	row := Row{Name: RowIperf, Metric: "iperf3 client → peer forward → iperf3 server", Unit: "MB/s", Target: "report", Status: StatusInfo}
	bin, err := iperf3Path()
	if err != nil {
		return failed(row, err)
	}
	stop, err := iperfServer(ctx, e, bin)
	if err != nil {
		return failed(row, err)
	}
	defer stop()
	d := max(time.Second, opts.Duration)
	pv, err := iperfClient(ctx, e, bin, stack.DefaultAddr4.String(), d)
	if err != nil {
		return failed(row, err)
	}
	bv, err := iperfClient(ctx, e, bin, "127.0.0.1", d)
	if err != nil {
		return failed(row, err)
	}
	row.Unplug, row.Baseline = pv/1e6, bv/1e6
	row.Ratio = row.Unplug / row.Baseline
	row.Note = "the forward dials from inside the namespace to an iperf3 server on its loopback; baseline: iperf3 over that loopback"
	return row
}

// connsRow holds idle connections in a namespace of their own.
func connsRow(ctx context.Context, opts Options) Row {
	n := opts.Conns
	row := Row{Name: RowConns, Metric: fmt.Sprintf("%d idle keepalive connections: memory each", n), Unit: "KiB", Target: fmt.Sprintf("< %.0f KiB", targetPerConnKiB)}
	fmt.Fprintf(opts.Progress, "bench: %d idle connections\n", n)
	if limit := fdLimit(); n+512 > limit {
		return failed(row, fmt.Errorf("%w: needs %d open files, the limit is %d: raise it with ulimit -n", errSkipped, n+512, limit))
	}
	e, err := newEnv(ctx, opts, envConfig{})
	if err != nil {
		return failed(row, err)
	}
	defer e.close()
	hold := 2500 * time.Millisecond
	if opts.Quick {
		hold = 1500 * time.Millisecond
	}
	res, err := idleConns(ctx, e, n, hold)
	if err != nil {
		return failed(row, err)
	}
	row.Unplug = res.goPerConn / 1024
	row.Note = fmt.Sprintf("Go heap+stacks per connection; resident set %.1f KiB each; %d held, %d failed; %d keepalive probes received in %s; peer service: sink (accepts, never reads)",
		res.rssPerConn/1024, res.held, res.unhealthy, res.probes, res.heldFor.Round(100*time.Millisecond))
	judge(&row, row.Unplug < targetPerConnKiB && res.held == n && res.probes >= uint64(n))
	return row
}

// serveRow times serve's start.
func serveRow(ctx context.Context, opts Options) Row {
	row := Row{Name: RowServe, Metric: "serve: start to accepting", Unit: "ms", Target: fmt.Sprintf("< %.0f ms", targetServe)}
	fmt.Fprintln(opts.Progress, "bench: serve start-up")
	d, err := serveStart(ctx, opts)
	if err != nil {
		return failed(row, err)
	}
	row.Unplug = float64(d) / float64(time.Millisecond)
	if opts.ServeCommand != nil {
		row.Note = fmt.Sprintf("median of %d: `%s serve` started in a fresh namespace until the echo port answers", opts.Starts, opts.ServeCommand[0])
	} else {
		row.Note = fmt.Sprintf("median of %d, in process: namespace, TUN, peer and services until the echo port answers", opts.Starts)
	}
	judge(&row, row.Unplug < targetServe)
	return row
}

// kernelRelease is uname -r.
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}
