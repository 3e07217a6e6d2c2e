package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/unplug-dev/unplug/internal/capture"
	"github.com/unplug-dev/unplug/scenarios"
	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/control"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
	"github.com/unplug-dev/unplug/tun"
)

type serveFlags struct {
	tunName    string
	attach     string
	mtu        int
	noIPv6     bool
	faults     faultsValue
	seed       uint64
	pcap       string
	logPackets bool
	control    string
	svc        services.Config
	forwards   forwardsValue
	record     bool
	busyPoll   time.Duration
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	peerProcs()
	fs := newFlagSet("serve", stderr)
	f := serveFlags{svc: services.DefaultConfig()}
	fs.StringVar(&f.tunName, "tun", "unplug0", "name of the TUN device to create")
	fs.StringVar(&f.attach, "attach", "", "use this existing, already configured persistent TUN instead of creating one")
	fs.IntVar(&f.mtu, "mtu", 1500, "MTU of the TUN link")
	fs.BoolVar(&f.noIPv6, "no-ipv6", false, "do not give the link its IPv6 ULA addresses")
	fs.Var(&f.faults, "fault", "fault rule to install at start (repeatable; grammar in README)")
	fs.Uint64Var(&f.seed, "seed", 1, "seed for loss and jitter draws (same seed, same decisions)")
	fs.StringVar(&f.pcap, "pcap", "", "write every packet, with drop/delay comments, to this pcapng file")
	fs.BoolVar(&f.logPackets, "log-packets", false, "print one line per packet")
	fs.StringVar(&f.control, "control", control.DefaultPath(), "control socket path")
	fs.BoolVar(&f.record, "record", false, "follow every connection for `unplug report` (memory grows with the connections)")
	fs.IntVar(&f.svc.HTTP, "http-port", f.svc.HTTP, "port of the http service (0 disables)")
	fs.IntVar(&f.svc.Echo, "echo-port", f.svc.Echo, "port of the echo service (0 disables)")
	fs.IntVar(&f.svc.Discard, "discard-port", f.svc.Discard, "port of the discard service (0 disables)")
	fs.IntVar(&f.svc.Sink, "sink-port", f.svc.Sink, "port of the sink service: accepts, never reads (0 disables)")
	fs.IntVar(&f.svc.Source, "source-port", f.svc.Source, "port of the source service: writes forever (0 disables)")
	fs.Var(&f.forwards, "forward", "splice connections to PORT on the peer to HOST:PORT (repeatable)")
	fs.DurationVar(&f.busyPoll, "busy-poll", defaultBusyPoll, busyPollUsage)
	addPersonaFlags(fs, &f.svc)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("serve takes no arguments, got %q", fs.Arg(0))
	}
	if f.mtu < 1280 || f.mtu > 65535 {
		return usagef("--mtu %d out of range; use 1280-65535", f.mtu)
	}
	if err := checkBusyPoll(f.busyPoll); err != nil {
		return err
	}
	f.svc.Forwards = f.forwards
	if err := f.svc.Validate(); err != nil {
		return usageError{portFlagError(err)} // conflicting ports: fail before anything exists
	}
	return serve(ctx, f, stdout, stderr)
}

// serve creates everything in an order that fails early (capture file and
// control socket before the device) and undoes it in reverse on any error.
func serve(ctx context.Context, f serveFlags, stdout, stderr io.Writer) (err error) {
	// Signals are caught from the start: one that arrives while serve sets
	// up, or just after it said it is ready, still shuts it down cleanly.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	var undo []func()
	ready := false // set once the peer runs; undo keeps its capture then
	defer func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}()
	start := time.Now()
	var pcap *capture.Writer
	if f.pcap != "" {
		_, statErr := os.Lstat(f.pcap)
		pcap, err = capture.Create(f.pcap)
		if err != nil {
			return err
		}
		if errors.Is(statErr, fs.ErrNotExist) {
			// A capture of a serve that never started is not left behind.
			undo = append(undo, func() {
				if !ready {
					os.Remove(f.pcap)
				}
			})
		}
		pcap.OnError = func(err error) {
			fmt.Fprintf(stderr, "unplug: capture stopped, the run continues: %v\n", err)
		}
		undo = append(undo, func() {
			if err := pcap.Close(); err != nil {
				fmt.Fprintf(stderr, "unplug: close capture: %v\n", err)
			}
		})
	}
	if dir := filepath.Dir(f.control); !exists(dir) {
		// Listen creates the directory; it goes again (if empty).
		undo = append(undo, func() { os.Remove(dir) })
	}
	srv := control.NewServer()
	if err := srv.Listen(f.control); err != nil {
		return controlAdvice(err)
	}
	undo = append(undo, func() { srv.Close() })
	undo = append(undo, startBusyPoll(f.busyPoll, stderr))

	var dev tun.Device
	if f.attach != "" {
		dev, err = tun.Attach(f.attach, f.mtu)
	} else {
		if why, off := tun.IPv6Off(); off && !f.noIPv6 {
			fmt.Fprintf(stderr, "unplug: %s: serving IPv4 only\n", why)
			f.noIPv6 = true
		}
		cfg := tun.DefaultConfig()
		cfg.Name, cfg.MTU = f.tunName, f.mtu
		if f.noIPv6 {
			cfg.HostPrefix6 = netip.Prefix{}
		}
		dev, err = tun.Create(cfg)
	}
	if err != nil {
		return err
	}
	var obs []fault.Observer
	if pcap != nil {
		obs = append(obs, pcap)
	}
	if f.logPackets {
		obs = append(obs, capture.NewLogger(stdout, start))
	}
	var rec *scenarios.PeerRecorder
	if f.record {
		rec = scenarios.NewPeerRecorder(tcpip.NewStdClock())
		obs = append(obs, rec)
		undo = append(undo, rec.Close)
		// Clients in serve's own namespace get the kernel's view too.
		if err := rec.WatchKernel(ctx, []netip.Addr{stack.DefaultAddr4, stack.DefaultAddr6}); err != nil {
			fmt.Fprintf(stderr, "unplug: --record: no kernel view of the clients' sockets: %v\n", err)
		}
	}
	// The peer outlives ctx: when ctx ends, serve stops it below with
	// Close, which lets FIN exchanges finish; services that saw ctx end
	// would reset their connections at once instead.
	peer, err := stack.New(context.WithoutCancel(ctx), stack.Options{
		Device:   dev,
		Seed:     f.seed,
		NoIPv6:   f.noIPv6,
		Faults:   f.faults,
		Observer: fault.Join(obs...),
		Services: f.svc,
	})
	if err != nil {
		return err
	}
	undo = append(undo, func() {
		if err := peer.Close(); err != nil {
			fmt.Fprintf(stderr, "unplug: stop the peer: %v\n", err)
		}
	})
	ready = true
	registerControl(srv, peer, rec, f.svc.Forwards)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ctx) }()

	fmt.Fprintf(stdout, "unplug: peer %s", stack.DefaultAddr4)
	if !f.noIPv6 {
		fmt.Fprintf(stdout, " and %s", stack.DefaultAddr6)
	}
	fmt.Fprintf(stdout, " on %s (ready in %s); control %s\n", dev.Name(), time.Since(start).Round(time.Millisecond), f.control)
	fmt.Fprintf(stdout, "unplug: services %s\n", servicesLine(f.svc))
	for _, r := range peer.Controller().Status() {
		fmt.Fprintf(stdout, "unplug: rule %d: %s\n", r.ID, r.Spec)
	}

	select {
	case sig := <-sigs:
		fmt.Fprintf(stderr, "unplug: %s: shutting down (again to exit at once)\n", sig)
		go func() {
			<-sigs
			os.Exit(exitFail)
		}()
	case err := <-serveErr:
		if err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("control socket: %w", err)
		}
	case <-ctx.Done():
	}
	// The peer first: its connections finish their FIN exchanges, and the
	// capture and the counters include every packet.
	if err := peer.Close(); err != nil {
		fmt.Fprintf(stderr, "unplug: stop the peer: %v\n", err)
	}
	if pcap != nil {
		if err := pcap.Flush(); err != nil {
			fmt.Fprintf(stderr, "unplug: flush capture: %v\n", err)
		}
	}
	printCounters(stdout, peer.Status())
	return nil
}

func servicesLine(c services.Config) string {
	s := ""
	for _, p := range []struct {
		name string
		port int
	}{{"http", c.HTTP}, {"echo", c.Echo}, {"discard", c.Discard}, {"sink", c.Sink}, {"source", c.Source}} {
		if p.port != 0 {
			s += fmt.Sprintf("%s:%d ", p.name, p.port)
		}
	}
	for _, fw := range c.Forwards {
		s += fmt.Sprintf("forward:%s ", fw)
	}
	return s
}

func printCounters(w io.Writer, st stack.Status) {
	l := st.Link
	fmt.Fprintf(w, "unplug: packets in %d, out %d, dropped %d, delayed %d\n", l.In, l.Out, l.Dropped, l.Delayed)
	for _, r := range st.Rules {
		fmt.Fprintf(w, "unplug: rule %d (%s): %s, matched %d, dropped %d, delayed %d%s\n", r.ID, r.Spec, r.State, r.Matched, r.Dropped, r.Delayed, otherCounters(r))
	}
}

// exists reports whether path exists (a broken symlink counts).
func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// servicePortFlags are the flags that move each built-in service.
var servicePortFlags = map[string]string{
	services.ServiceHTTP:    "--http-port",
	services.ServiceEcho:    "--echo-port",
	services.ServiceDiscard: "--discard-port",
	services.ServiceSink:    "--sink-port",
	services.ServiceSource:  "--source-port",
}

// portFlagError rewrites a services.PortError in serve's flags: which flag
// moves the service (or that each --forward needs its own port). Other
// errors are returned as they are.
func portFlagError(err error) error {
	var pe *services.PortError
	if !errors.As(err, &pe) {
		return err
	}
	switch {
	case pe.OutOfRange():
		return fmt.Errorf("%s port %d is out of range; pick 1-65535 with %s, or 0 to disable it",
			pe.Services[0], pe.Port, servicePortFlags[pe.Services[0]])
	case pe.TwoForwards():
		return fmt.Errorf("port %d is used by two forwards (to %s and %s); give each --forward its own port",
			pe.Port, pe.Targets[0], pe.Targets[1])
	}
	var move []string
	for _, name := range pe.Services {
		if flag, ok := servicePortFlags[name]; ok {
			move = append(move, flag)
		}
	}
	return fmt.Errorf("port %d is used by both %s and %s; pick another with %s",
		pe.Port, pe.Services[0], pe.Services[1], strings.Join(move, " or "))
}
