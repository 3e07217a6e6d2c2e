package fault_test

import (
	"fmt"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/faketime"

	"github.com/unplug-dev/unplug/stack/fault"
)

// ExampleParseSpec reads a rule in the grammar of docs/fault-rules.md; a
// mistake is one line naming the bad token.
func ExampleParseSpec() {
	sp, err := fault.ParseSpec("loss 10% dir=out match=retransmission for=5s")
	fmt.Println(sp, err)
	_, err = fault.ParseSpec("drop dir=sideways")
	fmt.Println(err)
	// Output:
	// loss 10% dir=out match=retransmission for=5s <nil>
	// fault spec "drop dir=sideways": "dir=sideways": dir must be in (towards the peer), out (from the peer) or both
}

// ExampleController_Add installs a rule built in Go. Add normalises the
// Spec: the zero Dir selects both directions, as ParseSpec's default does,
// so a literal Spec{Action: ActDrop} drops everything.
func ExampleController_Add() {
	c := fault.NewController(faketime.NewManualClock(), 1)
	id := c.Add(fault.Spec{Action: fault.ActDrop, Port: 80, For: 3 * time.Second})
	for _, r := range c.Status() {
		fmt.Println(r.ID == id, r.Spec, r.State)
	}
	// Output: true drop port=80 for=3s active
}
