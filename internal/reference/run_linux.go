package reference

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unplug-dev/unplug/scenarios"
)

// request404 is the seed's request, as the scenarios send it.
var request404 = []byte("GET /404 HTTP/1.0\r\n\r\n")

// blockedAfter is how long a send must take to count as blocked (as in
// the sendbuf-full scenario).
const blockedAfter = 250 * time.Millisecond

// Run runs scenario name with params (scenarios.ParseParams of the same
// scenario) the seed's way and returns what happened. The TCP metrics
// cache is flushed before, and the scenario's sysctls are put back after.
func (l *Lab) Run(ctx context.Context, name string, params scenarios.Params) (Series, error) {
	if err := run(ctx, "ip", "-n", l.Client, "tcp_metrics", "flush", "all"); err != nil {
		return Series{}, err
	}
	defer func() {
		for k, v := range l.defaults {
			l.setSysctl(l.Client, k, v)
		}
	}()
	r := &refRun{lab: l, p: params, s: Series{Source: "iptables reference", Outcome: "none", Measurements: map[string]float64{}}}
	sink := name == "sendbuf-full"
	srv, err := l.startServer(sink)
	if err != nil {
		return Series{}, err
	}
	defer srv.close()
	r.srv = srv
	r.start = time.Now()
	tp, err := l.startTap(r.start)
	if err != nil {
		return Series{}, err
	}
	var runErr error
	switch name {
	case "timeout":
		runErr = r.timeout(ctx)
	case "brief-outage":
		runErr = r.briefOutage(ctx)
	case "sendbuf-full":
		runErr = r.sendbufFull(ctx)
	case "keepalive":
		runErr = r.keepalive(ctx)
	case "syn-timeout":
		runErr = r.synTimeout(ctx)
	default:
		runErr = fmt.Errorf("the reference has no client for scenario %q (it covers %v)", name, Scenarios)
	}
	if r.dropOn {
		if err := l.drop(context.Background(), false); err != nil && runErr == nil {
			runErr = err
		}
	}
	if r.fd > 0 {
		unix.Close(r.fd)
	}
	time.Sleep(20 * time.Millisecond) // the last packets reach the tap
	pkts := tp.close()
	if runErr != nil {
		return Series{}, runErr
	}
	r.s.seriesOf(pkts)
	r.s.OutcomeAt = r.outcomeAt - r.s.T0
	return r.s, nil
}

// refRun is one reference run's state.
type refRun struct {
	lab       *Lab
	p         scenarios.Params
	srv       *server
	fd        int
	start     time.Time
	dropOn    bool
	s         Series
	outcomeAt time.Duration
}

func (r *refRun) now() time.Duration { return time.Since(r.start) }

// outcome records the outcome (an errno name or recovered / connected).
func (r *refRun) outcome(name string) {
	r.s.Outcome = name
	r.outcomeAt = r.now()
}

// errno records an errno the application got; it returns its name.
func (r *refRun) errno(err error) string {
	name := scenarios.ErrnoName(err)
	r.s.Errnos = append(r.s.Errnos, name)
	return name
}

// dropAll installs the seed's iptables rule.
func (r *refRun) dropAll(ctx context.Context) error {
	if err := r.lab.drop(ctx, true); err != nil {
		return err
	}
	r.dropOn = true
	return nil
}

// sockOpts are the client socket options the scenarios use.
type sockOpts struct {
	userTimeout         time.Duration
	keepIdle, keepIntvl time.Duration
	keepCnt             int
}

// dial connects a blocking client socket to the server, with opts set
// before connect, and (unless noWait) waits until the server accepted,
// like the scenarios' Dial.
func (r *refRun) dial(ctx context.Context, o sockOpts, noWait bool) error {
	fd, err := socket(r.lab.Client, false)
	if err != nil {
		return fmt.Errorf("client socket: %w", err)
	}
	r.fd = fd
	secs := func(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }
	set := func(level, opt, v int) error { return unix.SetsockoptInt(fd, level, opt, v) }
	var errs []error
	if o.userTimeout > 0 {
		errs = append(errs, set(unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(o.userTimeout.Milliseconds())))
	}
	if o.keepIdle > 0 {
		errs = append(errs, set(unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1),
			set(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, secs(o.keepIdle)),
			set(unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, secs(o.keepIntvl)),
			set(unix.IPPROTO_TCP, unix.TCP_KEEPCNT, o.keepCnt))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("client socket options: %w", err)
	}
	before := r.srv.accepted.Load()
	sa := &unix.SockaddrInet4{Port: ServerPort, Addr: ServerAddr.As4()}
	for {
		err = unix.Connect(fd, sa)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return errnoErr{err}
	}
	if noWait {
		return nil
	}
	if err := r.srv.waitAccepted(ctx, before); err != nil {
		return err
	}
	if ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
		r.s.RTT = time.Duration(ti.Rtt) * time.Microsecond
		r.s.RTO = time.Duration(ti.Rto) * time.Microsecond
	}
	return nil
}

// errnoErr marks an errno from a client call: an outcome, not a failure.
type errnoErr struct{ err error }

func (e errnoErr) Error() string { return e.err.Error() }
func (e errnoErr) Unwrap() error { return e.err }

func (r *refRun) send(b []byte) (int, error) {
	for {
		n, err := unix.SendmsgN(r.fd, b, nil, nil, unix.MSG_NOSIGNAL)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, errnoErr{err}
		}
		return n, nil
	}
}

func (r *refRun) recv(b []byte) (int, error) {
	for {
		n, err := unix.Read(r.fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, errnoErr{err}
		}
		return n, nil
	}
}

// ended turns an errno into the outcome and returns nil; any other error
// is returned.
func (r *refRun) ended(err error) error {
	var e errnoErr
	if !errors.As(err, &e) {
		return err
	}
	r.outcome(r.errno(e.err))
	return nil
}

func (r *refRun) timeout(ctx context.Context) error {
	if err := r.lab.setSysctl(r.lab.Client, "net.ipv4.tcp_retries2", strconv.Itoa(r.p.Int("retries2"))); err != nil {
		return err
	}
	if err := r.dial(ctx, sockOpts{userTimeout: r.p.Duration("user-timeout")}, false); err != nil {
		return err
	}
	if err := r.dropAll(ctx); err != nil {
		return err
	}
	if _, err := r.send(request404); err != nil {
		return r.ended(err)
	}
	buf := make([]byte, 4096)
	n, err := r.recv(buf)
	if err != nil {
		return r.ended(err)
	}
	return fmt.Errorf("recv returned %d bytes although the server drops everything", n)
}

func (r *refRun) briefOutage(ctx context.Context) error {
	d := r.p.Duration("outage")
	if err := r.dial(ctx, sockOpts{}, false); err != nil {
		return err
	}
	if err := r.dropAll(ctx); err != nil {
		return err
	}
	lift := time.Now().Add(d)
	liftErr := make(chan error, 1)
	go func() {
		time.Sleep(time.Until(lift))
		err := r.lab.drop(context.Background(), false)
		if err == nil {
			r.dropOn = false
		}
		liftErr <- err
	}()
	if _, err := r.send(request404); err != nil {
		<-liftErr
		return r.ended(err)
	}
	buf := make([]byte, 4096)
	var resp []byte
	first := time.Duration(-1)
	for {
		n, err := r.recv(buf)
		if n > 0 && first < 0 {
			first = r.now()
		}
		resp = append(resp, buf[:n]...)
		if err != nil {
			if e := <-liftErr; e != nil {
				return e
			}
			return r.ended(err)
		}
		if n == 0 {
			break
		}
	}
	if err := <-liftErr; err != nil {
		return err
	}
	if !bytes.HasPrefix(resp, []byte("HTTP/1.0 404 ")) {
		return fmt.Errorf("unexpected response from the reference server: %.40q", resp)
	}
	r.s.Outcome, r.outcomeAt = scenarios.OutcomeRecovered, first
	return nil
}

func (r *refRun) sendbufFull(ctx context.Context) error {
	chunk := bytes.Repeat([]byte("*"), int(r.p.Size("chunk")))
	if err := r.dial(ctx, sockOpts{userTimeout: r.p.Duration("user-timeout")}, false); err != nil {
		return err
	}
	if err := r.dropAll(ctx); err != nil {
		return err
	}
	var accepted, total int64
	blocked := false
	firstEPIPE := time.Duration(-1)
	for epipes := 0; epipes < 2; {
		if total > r.p.Size("limit") {
			return fmt.Errorf("wrote %d bytes into a dead link without send blocking", total)
		}
		start := time.Now()
		n, err := r.send(chunk)
		took := time.Since(start)
		total += int64(n)
		if !blocked {
			if err == nil && n == len(chunk) && took < blockedAfter {
				accepted += int64(n)
				continue
			}
			blocked = true
			r.s.Measurements["accepted at once"] = float64(accepted)
			r.s.Measurements["blocked send"] = took.Seconds()
		}
		if err == nil {
			continue
		}
		var e errnoErr
		if !errors.As(err, &e) {
			return err
		}
		if r.errno(e.err) == "EPIPE" {
			if firstEPIPE < 0 {
				firstEPIPE = r.now()
			}
			epipes++
		}
	}
	r.s.Outcome, r.outcomeAt = "EPIPE", firstEPIPE
	return nil
}

func (r *refRun) keepalive(ctx context.Context) error {
	o := sockOpts{keepIdle: r.p.Duration("idle"), keepIntvl: r.p.Duration("intvl"), keepCnt: r.p.Int("count")}
	if err := r.dial(ctx, o, false); err != nil {
		return err
	}
	if err := r.dropAll(ctx); err != nil {
		return err
	}
	buf := make([]byte, 64)
	n, err := r.recv(buf)
	if err != nil {
		return r.ended(err)
	}
	return fmt.Errorf("recv returned %d bytes although the server drops everything", n)
}

func (r *refRun) synTimeout(ctx context.Context) error {
	if err := r.lab.setSysctl(r.lab.Client, "net.ipv4.tcp_syn_retries", strconv.Itoa(r.p.Int("syn-retries"))); err != nil {
		return err
	}
	linear := strconv.Itoa(r.p.Int("linear-timeouts"))
	if _, ok := r.lab.defaults["net.ipv4.tcp_syn_linear_timeouts"]; ok {
		if err := r.lab.setSysctl(r.lab.Client, "net.ipv4.tcp_syn_linear_timeouts", linear); err != nil {
			return err
		}
	} else if linear != "0" {
		return errors.New("this kernel has no tcp_syn_linear_timeouts")
	}
	if d := r.p.Duration("outage"); d > 0 {
		return errors.New("the reference runs syn-timeout with the link down for good (--outage 0)")
	}
	if err := r.dropAll(ctx); err != nil {
		return err
	}
	if err := r.dial(ctx, sockOpts{}, true); err != nil {
		return r.ended(err)
	}
	r.s.Outcome, r.outcomeAt = scenarios.OutcomeConnected, r.now()
	return nil
}
