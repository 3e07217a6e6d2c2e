package control_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"gvisor.dev/gvisor/pkg/tcpip/faketime"

	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/control"
	"github.com/unplug-dev/unplug/stack/fault"
)

// rulesOnly is a Peer with fault rules and no netstack, standing in for
// the *stack.Peer that `unplug serve` registers.
type rulesOnly struct{ ctl *fault.Controller }

func (p rulesOnly) Controller() *fault.Controller { return p.ctl }
func (p rulesOnly) Status() stack.Status          { return stack.Status{Rules: p.ctl.Status()} }

// ExampleClient drives a server's fault rules from Go, as `unplug fault`
// does from the shell.
func ExampleClient() {
	dir, _ := os.MkdirTemp("", "unplug-example-")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "control.sock")

	srv := control.NewServer()
	control.HandlePeer(srv, rulesOnly{fault.NewController(faketime.NewManualClock(), 1)})
	if err := srv.Listen(path); err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); <-done }()

	c := control.Client{Path: path}
	ids, _ := c.AddFault(ctx, "drop dir=in for=3s", "delay 100ms port=80")
	rules, _ := c.Faults(ctx)
	for _, r := range rules {
		fmt.Println(r.ID, r.Spec)
	}
	c.RemoveFault(ctx, ids[0])
	n, _ := c.ClearFaults(ctx)
	fmt.Println("cleared", n)
	// Output:
	// 1 drop dir=in for=3s
	// 2 delay 100ms port=80
	// cleared 1
}
