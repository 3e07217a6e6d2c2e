package tun_test

import (
	"context"
	"fmt"

	"github.com/unplug-dev/unplug/tun"
)

// ExampleNewNamespace makes a private network namespace holding a TUN
// device (as root, or in a user namespace) whose kernel side has
// 198.18.0.1; a program run in it (Namespace.Run, Start) or a socket dialed
// from it (Namespace.Dial) reaches whatever reads the device: in unplug,
// stack.New's peer at 198.18.0.2. The test binary or main must call
// tun.RunAgentIfRequested first: the namespace's agent is the program
// itself, re-executed.
func ExampleNewNamespace() {
	ns, err := tun.NewNamespace(context.Background(), tun.NamespaceConfig{TUN: tun.DefaultConfig()})
	if err != nil {
		fmt.Println(err) // names the missing precondition and its fix
		return
	}
	defer ns.Close()
	dev := ns.Device()
	fmt.Println("device", dev.Name(), "MTU", dev.MTU())
}
