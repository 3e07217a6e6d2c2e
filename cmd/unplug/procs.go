package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/unplug-dev/unplug/internal/busypoll"
)

// peerProcs sets how many OS threads run the peer's Go code at once
// (GOMAXPROCS) for the commands that run a peer next to the kernel TCP
// endpoints it talks to: half the CPUs, at least one, unless the GOMAXPROCS
// environment variable says otherwise.
//
// Why: the peer's work on a connection is one chain of hand-offs (TUN
// read, fault layer, gVisor's TCP, a service), and the kernel side of
// every one of its system calls (the client's or upstream's TCP, run in
// the peer's writes) needs a CPU as well. With a P per CPU the Go
// scheduler wakes a second thread for every goroutine made runnable and
// lets it spin looking for work, on the very CPU the kernel's TCP needed:
// measured on 2 vCPUs through `serve --forward`, 22 % of the peer's CPU
// was runtime.findRunnable and sysmon, and GOMAXPROCS=1 cut CPU per GB
// by a third and raised upstream → client throughput by 30 %.
func peerProcs() {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	runtime.GOMAXPROCS(max(1, runtime.NumCPU()/2))
}

// defaultBusyPoll is how long, after traffic, the peer's thread keeps
// polling before it sleeps (--busy-poll): longer than a request's trip to
// a local upstream and back, so that neither wake-up of a round trip
// finds the peer's vCPU halted.
const defaultBusyPoll = 200 * time.Microsecond

// busyPollUsage is --busy-poll's help, the same for serve and exec.
const busyPollUsage = "after traffic, keep polling this long before the peer's thread sleeps (lower latency on VMs, paid in CPU; 0 disables)"

// checkBusyPoll rejects a --busy-poll the poller cannot honour.
func checkBusyPoll(d time.Duration) error {
	if d < 0 || d > 10*time.Millisecond {
		return usagef("--busy-poll %s out of range; use 0 (off) to 10ms", d)
	}
	return nil
}

// startBusyPoll starts the busy poller for window and returns its stop.
// A poller that cannot start is reported and the peer runs without it.
func startBusyPoll(window time.Duration, stderr io.Writer) func() {
	stop, err := busypoll.Start(window)
	if err != nil {
		fmt.Fprintf(stderr, "unplug: running without --busy-poll: %v\n", err)
		return func() {}
	}
	return stop
}
