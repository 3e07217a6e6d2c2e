package scenarios

import (
	"context"
	"fmt"

	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/tun"
)

// Exec runs a program inside a fresh private network namespace whose only
// way out is the TUN to the peer (198.18.0.2, with its services and
// forwards), with the given fault rules on the link, and returns the
// program's exit code. Nothing in the caller's namespace changes.
func Exec(ctx context.Context, o ExecOptions) (int, error) {
	cfg := tun.DefaultConfig()
	ns, err := tun.NewNamespace(ctx, tun.NamespaceConfig{TUN: cfg})
	if err != nil {
		return 0, fmt.Errorf("create the private network namespace: %w", err)
	}
	defer ns.Close()
	svc := peerServices()
	svc.Forwards = o.Forwards
	peer, err := stack.New(ctx, stack.Options{
		Device:      ns.Device(),
		Seed:        o.Seed,
		Faults:      o.Faults,
		Observer:    o.Observer,
		Services:    svc,
		Transparent: o.Transparent,
	})
	if err != nil {
		return 0, fmt.Errorf("start the peer: %w", err)
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
				return 0, fmt.Errorf("--transparent: add a default route inside the namespace (%v, exit %d); is iproute2 installed?", err, code)
			}
		}
	}
	return ns.Run(ctx, o.Stdin, o.Stdout, o.Stderr, o.Argv)
}
