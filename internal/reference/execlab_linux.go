package reference

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unplug-dev/unplug/internal/netaddr"
	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
)

// ExecServices are the peer's built-in services and their ports; the exec
// lab's server offers each on a kernel socket at netaddr.Peer4.
var ExecServices = []struct {
	Name string
	Port int
}{
	{services.ServiceHTTP, services.DefaultHTTPPort},
	{services.ServiceEcho, services.DefaultEchoPort},
	{services.ServiceDiscard, services.DefaultDiscardPort},
	{services.ServiceSink, services.DefaultSinkPort},
	{services.ServiceSource, services.DefaultSourcePort},
}

// ExecLab is the reference for `unplug exec --reference`: the program's
// namespace with the addresses unplug's gives it (198.18.0.1/24, the peer
// at 198.18.0.2), on a veth pair to a server namespace that offers the
// peer's services on kernel sockets (the same session code,
// services.ServeKernel), and the fault rules as iptables rules (Translate)
// applied and removed on the rules' schedule. It implements
// scenarios.ExecLab. IPv4 only.
type ExecLab struct {
	Lab
	specs []fault.Spec
	rules []Rule

	srvDone chan struct{}
	srvWG   sync.WaitGroup
	lns     []net.Listener

	mu      sync.Mutex
	start   time.Time
	obs     fault.Observer
	tap     *tap
	applied []Applied // one per rule, in rules' order
	timers  []*time.Timer
	sched   sync.WaitGroup
	errs    []error
	ended   bool
}

// NewExecLab checks that every fault rule translates (before anything is
// created), then builds the namespaces PREFIX-cli-RAND and PREFIX-srv-RAND,
// sets sysctls (net.* only) in the client's and starts the services. On
// error nothing is left behind.
func NewExecLab(ctx context.Context, prefix string, specs []fault.Spec, sysctls map[string]string) (*ExecLab, error) {
	rules, err := Translate(specs)
	if err != nil {
		return nil, err
	}
	if err := Available(); err != nil {
		return nil, err
	}
	ipt, _ := iptablesBinary()
	removeStale(ctx, prefix)
	var rb [3]byte
	rand.Read(rb[:])
	// The creator's PID in the name lets a later lab remove this one if
	// the creator was killed before it could (SIGKILL).
	tag := fmt.Sprintf("%d-%s", os.Getpid(), hex.EncodeToString(rb[:]))
	l := &ExecLab{Lab: Lab{Client: prefix + "-cli-" + tag, Server: prefix + "-srv-" + tag, Iptables: ipt, defaults: map[string]string{}},
		specs: specs, rules: rules, srvDone: make(chan struct{})}
	if err := l.setup(ctx, sysctls); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func (l *ExecLab) setup(ctx context.Context, sysctls map[string]string) error {
	for _, ns := range []string{l.Client, l.Server} {
		if err := run(ctx, "ip", "netns", "add", ns); err != nil {
			return err
		}
		for k, v := range baseSysctls {
			if err := l.setSysctl(ns, k, v); err != nil {
				return err
			}
		}
	}
	host, peer := netaddr.HostPrefix4(), netaddr.Peer4
	steps := [][]string{
		{"ip", "-n", l.Client, "link", "add", clientIf, "type", "veth", "peer", "name", serverIf, "netns", l.Server},
		// One segment per packet, as the TUN's reader splits them: the
		// tap then sees what unplug's link sees.
		{"ip", "-n", l.Client, "link", "set", "dev", clientIf, "gso_max_segs", "1"},
		{"ip", "-n", l.Server, "link", "set", "dev", serverIf, "gso_max_segs", "1"},
		{"ip", "-n", l.Client, "addr", "add", host.String(), "dev", clientIf},
		{"ip", "-n", l.Server, "addr", "add", fmt.Sprintf("%s/%d", peer, host.Bits()), "dev", serverIf},
		{"ip", "-n", l.Client, "link", "set", "lo", "up"},
		{"ip", "-n", l.Server, "link", "set", "lo", "up"},
		{"ip", "-n", l.Client, "link", "set", clientIf, "up"},
		{"ip", "-n", l.Server, "link", "set", serverIf, "up"},
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	for k, v := range sysctls {
		if !strings.HasPrefix(k, "net.") {
			return fmt.Errorf("sysctl %s: only net.* sysctls are per network namespace", k)
		}
		if err := l.setSysctl(l.Client, k, v); err != nil {
			return err
		}
	}
	for _, ns := range []string{l.Client, l.Server} {
		if out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, l.Iptables, "-S", "INPUT").CombinedOutput(); err != nil {
			return fmt.Errorf("iptables in namespace %s: %v: %s", ns, err, bytes.TrimSpace(out))
		}
	}
	for _, r := range l.rules {
		if err := l.iptables(r, "-N", r.Chain()); err != nil {
			return err
		}
		if err := l.iptables(r, "-A", r.Chain(), "-j", "DROP"); err != nil {
			return err
		}
	}
	for _, s := range ExecServices {
		if err := l.listen(s.Name, s.Port); err != nil {
			return err
		}
	}
	return nil
}

// listen serves one of the peer's services on a kernel socket in the
// server namespace.
func (l *ExecLab) listen(name string, port int) error {
	fd, err := socket(l.Server, true)
	if err != nil {
		return fmt.Errorf("%s listener: %w", name, err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: netaddr.Peer4.As4()}); err != nil {
		unix.Close(fd)
		return fmt.Errorf("%s listener: bind %s:%d: %w", name, netaddr.Peer4, port, err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		unix.Close(fd)
		return fmt.Errorf("%s listener: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s listener: %w", name, err)
	}
	l.lns = append(l.lns, ln)
	l.srvWG.Add(1)
	go func() {
		defer l.srvWG.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f, err := c.(*net.TCPConn).File()
			c.Close()
			if err != nil {
				continue
			}
			fd, err := unix.Dup(int(f.Fd()))
			f.Close()
			if err != nil {
				continue
			}
			l.srvWG.Add(1)
			go func() {
				defer l.srvWG.Done()
				services.ServeKernel(l.srvDone, name, fd)
			}()
		}
	}()
	return nil
}

// removeStale deletes the namespaces PREFIX-cli-PID-TAG and
// PREFIX-srv-PID-TAG of exec labs whose creating process PID is gone:
// an unplug killed with SIGKILL, which could not clean up. A PID that
// exists (its own lab, or a reused number) is left alone.
func removeStale(ctx context.Context, prefix string) {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix+"-")
		if !ok {
			continue
		}
		rest, ok = strings.CutPrefix(rest, "cli-")
		if !ok {
			rest, ok = strings.CutPrefix(rest, "srv-")
		}
		pid, _, ok2 := strings.Cut(rest, "-")
		n, err := strconv.Atoi(pid)
		if !ok || !ok2 || err != nil || n <= 0 {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", n)); err == nil {
			continue
		}
		run(ctx, "ip", "netns", "del", e.Name())
	}
}

// Netns implements scenarios.ExecLab.
func (l *ExecLab) Netns() string { return l.Client }

// Sysctl implements scenarios.ExecLab.
func (l *ExecLab) Sysctl(name string) (string, error) { return l.sysctl(l.Client, name) }

// Rules are the iptables rules the fault rules became.
func (l *ExecLab) Rules() []Rule { return l.rules }

// Begin implements scenarios.ExecLab: the tap on the client's veth, the
// rules that start at once, timers for the others.
func (l *ExecLab) Begin(obs fault.Observer, start time.Time) error {
	l.mu.Lock()
	l.start, l.obs = start, obs
	l.applied = make([]Applied, len(l.rules))
	for i, r := range l.rules {
		l.applied[i] = Applied{Rule: r, Counter: -1}
	}
	l.mu.Unlock()
	t := &tap{start: start}
	t.sink = l.packet
	if err := t.open(l.Client, clientIf); err != nil {
		return err
	}
	l.mu.Lock()
	l.tap = t
	l.mu.Unlock()
	// The rules on from the start go in together; after= and for=
	// count from then, when the program starts (as unplug's rules count
	// from their installation just before it).
	var wg sync.WaitGroup
	errs := make([]error, len(l.rules))
	for i := range l.rules {
		if after, _ := l.schedule(i); after == 0 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = l.place(i)
			}()
		}
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	origin := time.Now()
	for i := range l.rules {
		after, dur := l.schedule(i)
		if after > 0 {
			l.at(origin.Add(after), func() { l.place(i) })
		}
		if dur > 0 {
			l.at(origin.Add(after+dur), func() { l.remove(i) })
		}
	}
	return nil
}

// schedule is rule i's after= and for=.
func (l *ExecLab) schedule(i int) (after, dur time.Duration) {
	sp := l.specs[l.rules[i].Fault-1]
	return sp.After, sp.For
}

// at runs f at t on a timer End waits for.
func (l *ExecLab) at(t time.Time, f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		return
	}
	l.sched.Add(1)
	tm := time.AfterFunc(time.Until(t), func() {
		defer l.sched.Done()
		l.mu.Lock()
		ended := l.ended
		l.mu.Unlock()
		if !ended {
			f()
		}
	})
	l.timers = append(l.timers, tm)
}

func (l *ExecLab) nsOf(r Rule) string {
	if r.Dir == packet.Out {
		return l.Client
	}
	return l.Server
}

// iptables runs iptables with args in r's namespace, forked from a
// thread inside it (no `ip netns exec`: placing a rule takes one exec).
func (l *ExecLab) iptables(r Rule, args ...string) error {
	var out []byte
	err := inNetns(l.nsOf(r), func() error {
		var err error
		out, err = exec.Command(l.Iptables, args...).CombinedOutput()
		return err
	})
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", l.Iptables, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// place adds rule i's jump.
func (l *ExecLab) place(i int) error {
	r := l.rules[i]
	err := l.iptables(r, append([]string{"-A", "INPUT"}, r.Args()...)...)
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.errs = append(l.errs, err)
		return err
	}
	a := &l.applied[i]
	a.Placed, a.on, a.On = true, now, now.Sub(l.start)
	return nil
}

// remove deletes rule i's jump.
func (l *ExecLab) remove(i int) error {
	l.mu.Lock()
	a := l.applied[i]
	l.mu.Unlock()
	if !a.Placed || !a.off.IsZero() {
		return nil
	}
	r := l.rules[i]
	err := l.iptables(r, append([]string{"-D", "INPUT"}, r.Args()...)...)
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.errs = append(l.errs, err)
		return err
	}
	p := &l.applied[i]
	p.off, p.Off = now, now.Sub(l.start)
	return nil
}

// counter reads iptables' packet counter of r's DROP (`iptables -v -S
// CHAIN`: -A CHAIN -c PACKETS BYTES -j DROP).
func (l *ExecLab) counter(r Rule) (int, error) {
	var out []byte
	err := inNetns(l.nsOf(r), func() error {
		var err error
		out, err = exec.Command(l.Iptables, "-v", "-S", r.Chain()).CombinedOutput()
		return err
	})
	if err != nil {
		return -1, fmt.Errorf("iptables -v -S %s: %v: %s", r.Chain(), err, bytes.TrimSpace(out))
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 && f[0] == "-A" {
			for j, w := range f {
				if w == "-c" && j+1 < len(f) {
					return strconv.Atoi(f[j+1])
				}
			}
		}
	}
	return -1, fmt.Errorf("no counter in iptables' listing of %s", r.Chain())
}

// packet is the tap's sink: the packet's fate under the rules in place
// when it crossed, to the observer.
func (l *ExecLab) packet(ts time.Time, b []byte, size int) {
	var p packet.Packet
	if err := packet.ParsePrefix(packet.In, b, size, &p); err != nil || p.Version != 4 {
		return
	}
	if p.Src != netaddr.Host4 {
		p.Dir = packet.Out
	}
	ev := fault.Event{Time: ts, Packet: &p, Data: b}
	l.mu.Lock()
	for i := range l.applied {
		a := &l.applied[i]
		if a.Placed && !ts.Before(a.on) && (a.off.IsZero() || ts.Before(a.off)) && a.Rule.Matches(&p) {
			a.Counted++
			ev.Decision = fault.Decision{Verdict: fault.Dropped, Rule: a.Rule.Fault, Action: fault.ActDrop}
			ev.Comment = fmt.Sprintf("dropped by iptables rule %s (%s)", a.Rule.Tag, a.Rule)
			break
		}
	}
	obs := l.obs
	l.mu.Unlock()
	if obs != nil {
		obs.Observe(&ev)
	}
}

// End implements scenarios.ExecLab: no more timers, the tap stopped, the
// counters of the rules still in place read and the rules removed.
func (l *ExecLab) End() error {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return nil
	}
	l.ended = true
	for _, t := range l.timers {
		if t.Stop() {
			l.sched.Done()
		}
	}
	tp := l.tap
	l.mu.Unlock()
	l.sched.Wait()
	if tp != nil {
		time.Sleep(20 * time.Millisecond) // the last packets reach the tap
		tp.close()
	}
	for i := range l.applied {
		if l.remove(i) == nil && l.applied[i].Placed && l.applied[i].Off > 0 {
			if _, dur := l.schedule(i); dur == 0 {
				l.mu.Lock()
				l.applied[i].AtEnd = true
				l.mu.Unlock()
			}
		}
		if !l.applied[i].Placed {
			continue
		}
		n, err := l.counter(l.rules[i])
		l.mu.Lock()
		l.applied[i].Counter = n
		if err != nil {
			l.errs = append(l.errs, err)
		}
		l.mu.Unlock()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return errors.Join(l.errs...)
}

// Applied returns what became of each rule (after End).
func (l *ExecLab) Applied() []Applied {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Applied(nil), l.applied...)
}

// Close stops the services and deletes both namespaces; idempotent.
func (l *ExecLab) Close() error {
	l.End()
	select {
	case <-l.srvDone:
	default:
		close(l.srvDone)
	}
	for _, ln := range l.lns {
		ln.Close()
	}
	l.lns = nil
	l.srvWG.Wait()
	return l.Lab.Close()
}
