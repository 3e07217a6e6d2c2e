package stack_test

import (
	"context"
	"fmt"

	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
	"github.com/unplug-dev/unplug/tun"
)

// ExampleNew builds the peer on a TUN device (here tun.NewMemoryPair's,
// whose other end a test would write the client's packets to; on Linux
// tun.NewNamespace's device, where the kernel is the client) with an HTTP
// service and a fault rule installed from the start. Options.Link takes any
// other gVisor link endpoint instead of a device.
func ExampleNew() {
	dev, wire := tun.NewMemoryPair(1500)
	defer wire.Close()
	drop, err := fault.ParseSpec("drop port=80 for=3s")
	if err != nil {
		fmt.Println(err)
		return
	}
	p, err := stack.New(context.Background(), stack.Options{
		Device:   dev,
		Faults:   []fault.Spec{drop},
		Services: services.Config{HTTP: 80},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()
	for _, r := range p.Controller().Status() {
		fmt.Println(r.ID, r.Spec, r.State)
	}
	fmt.Println("peer at", stack.DefaultAddr4)
	// Output:
	// 1 drop port=80 for=3s active
	// peer at 198.18.0.2
}
