//go:build linux

package unplug

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
	"github.com/unplug-dev/unplug/tun"
)

// realWorld is the Real clock: the peer on a TUN device in a private network
// namespace, clients as kernel sockets made inside it.
type realWorld struct {
	ns    *tun.Namespace
	peer  *stack.Peer
	start time.Time
}

// setupTimeout bounds building the namespace.
const setupTimeout = time.Minute

func newReal(opts Options, specs []fault.Spec) (world, error) {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	cfg := tun.DefaultConfig()
	// IPv4 only: the kernel's IPv6 chatter (router solicitations, MLD)
	// would cross the fault layer too.
	cfg.HostPrefix6 = netip.Prefix{}
	ns, err := tun.NewNamespace(ctx, tun.NamespaceConfig{
		TUN:     cfg,
		Sysctls: map[string]string{"net.ipv6.conf.default.disable_ipv6": "1"},
	})
	if errors.Is(err, tun.ErrPermission) || errors.Is(err, tun.ErrUnsupported) || errors.Is(err, tun.ErrNoTunDevice) {
		return nil, fmt.Errorf("%w: it needs a private network namespace with a TUN device: %w", ErrUnavailable, err)
	}
	if err != nil {
		return nil, fmt.Errorf("create the private network namespace: %w", err)
	}
	// The services live as long as the peer: Close stops them, not ctx.
	peer, err := stack.New(context.Background(), stack.Options{
		Device:   ns.Device(),
		Clock:    tcpip.NewStdClock(),
		Seed:     opts.Seed,
		NoIPv6:   true,
		Faults:   specs,
		Services: services.DefaultConfig(),
	})
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("start the peer: %w", err)
	}
	return &realWorld{ns: ns, peer: peer, start: time.Now()}, nil
}

func (r *realWorld) dial(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	return r.ns.Dial(ctx, "tcp", ap.String(), nil)
}

func (r *realWorld) faults() *fault.Controller { return r.peer.Controller() }

func (r *realWorld) sleep(d time.Duration) { time.Sleep(d) }

func (r *realWorld) now() time.Duration { return time.Since(r.start) }

func (r *realWorld) close() error {
	err := r.peer.Close()
	if nerr := r.ns.Close(); err == nil {
		err = nerr
	}
	return err
}
