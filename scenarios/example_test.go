package scenarios_test

import (
	"context"
	"fmt"

	"github.com/unplug-dev/unplug/scenarios"
)

// ExampleRun runs the timeout scenario (a request sent into a link that
// just died) with every default, in virtual time: both ends are gVisor,
// and the client's recv fails with ETIMEDOUT 16 s into the run (the RTO
// doubling from 1 s, --retries2 4), reached in milliseconds of wall time. On the real clock (the default; root or a
// user namespace) the client is the host kernel. The report renders as a
// table, JSON or SVG (cmd/unplug does that).
func ExampleRun() {
	rep, err := scenarios.Run(context.Background(), "timeout", scenarios.Params{}, scenarios.Options{Clock: scenarios.ClockVirtual})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(rep.Scenario, rep.Client, rep.Outcome, rep.OutcomeAt, rep.Verdict)
	// Output: timeout gvisor ETIMEDOUT 16s pass
}
