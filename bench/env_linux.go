package bench

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
	"github.com/unplug-dev/unplug/tun"
)

// env is one private namespace with the peer on its TUN: the kernel clients
// of every measurement live in the namespace, the peer in this process.
type env struct {
	ns   *tun.Namespace
	peer *stack.Peer
	opts Options
}

// envConfig is what differs between environments.
type envConfig struct {
	forwards []services.Forward
	observer fault.Observer // sees every packet at the fault layer; nil = none
}

// newEnv builds the namespace and the peer. Forwards dial from inside the
// namespace, so their upstreams (an iperf3 server) are on its loopback and
// nothing reaches the host's network.
func newEnv(ctx context.Context, opts Options, ec envConfig) (*env, error) {
	cfg := tun.DefaultConfig()
	cfg.Name = "unplugb0"
	cfg.MTU = opts.MTU
	cfg.HostPrefix6 = netip.Prefix{}
	cfg.Offload = !opts.NoOffload
	ns, err := tun.NewNamespace(ctx, tun.NamespaceConfig{
		TUN:     cfg,
		Sysctls: map[string]string{"net.ipv6.conf.default.disable_ipv6": "1"},
	})
	if err != nil {
		return nil, fmt.Errorf("create the benchmark namespace: %w", err)
	}
	e := &env{ns: ns, opts: opts}
	svc := services.DefaultConfig()
	svc.Forwards = ec.forwards
	svc.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return ns.Dial(ctx, network, addr, nil)
	}
	e.peer, err = stack.New(ctx, stack.Options{
		Device:   ns.Device(),
		NoIPv6:   true,
		Services: svc,
		Observer: ec.observer,
	})
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("start the peer: %w", err)
	}
	return e, nil
}

// close stops the peer and removes the namespace.
func (e *env) close() error {
	err := e.peer.Close()
	if cerr := e.ns.Close(); err == nil {
		err = cerr
	}
	return err
}

// peerAddr is the peer's service on port.
func peerAddr(port int) string {
	return netip.AddrPortFrom(stack.DefaultAddr4, uint16(port)).String()
}

// listenLoopback opens a kernel TCP listener on 127.0.0.1 inside the
// namespace: the baseline's server. Go serves it from this process.
func (e *env) listenLoopback() (net.Listener, error) { return listenLoopback(e.ns) }

// listenLoopback opens a kernel TCP listener on 127.0.0.1 (a free port)
// inside ns.
func listenLoopback(ns *tun.Namespace) (net.Listener, error) {
	f, err := ns.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return nil, fmt.Errorf("baseline listener: %w", err)
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("baseline listener: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
			return
		}
		if serr = unix.Bind(int(fd), &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); serr != nil {
			return
		}
		serr = unix.Listen(int(fd), 4096)
	}); err != nil {
		return nil, fmt.Errorf("baseline listener: %w", err)
	}
	if serr != nil {
		return nil, fmt.Errorf("baseline listener: %w", serr)
	}
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("baseline listener: %w", err)
	}
	return l, nil
}

// dial connects from inside the namespace.
func (e *env) dial(ctx context.Context, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return e.ns.Dial(ctx, "tcp4", addr, nil)
}
