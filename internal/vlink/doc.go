// Package vlink is unplug's virtual-time mode: a client gVisor stack
// (198.18.0.1, fd00:198:18::1) and the peer stack (198.18.0.2,
// fd00:198:18::2) on one shared virtual Clock, joined by an in-process Link
// whose peer end sits under the same fault layer as the TUN device on the
// real path, plus an optional one-way delay. Time moves only when the driver
// moves it, so a scenario that takes 18 simulated minutes finishes in
// milliseconds, runs the same way every time, and a debugger can stop the
// program without timers firing behind its back.
//
// Build a Pair, operate sockets through its non-blocking helpers, and let
// time pass with Settle, Step, Advance or RunUntil:
//
//	p, err := vlink.NewPair(vlink.PairOptions{Delay: 20 * time.Millisecond, Seed: 1})
//	if err != nil { ... }
//	defer p.Close()
//	l, err := p.Listen(80)
//	c, err := p.Connect(vlink.PeerAddr4.String(), 80, time.Minute)
//	p.Faults.AddString("drop")
//	c.Write(request)
//	err = p.RunUntil(func() bool { return c.Err() != nil }, time.Hour)
//	// errors.Is(c.Err(), vlink.ETIMEDOUT), p.Now() is when it happened
//
// A scenario runner loops "try the operation; if it returns ErrWouldBlock,
// Step"; Driver is that loop, with the peer's services (a services.Poller)
// polled whenever the stacks have settled. The peer is assembled by the
// same code as stack.New's (internal/peer.Build: its TCP, fault layer, NIC
// and addresses), so a virtual run tests the peer a real run tests; vlink
// depends on internal/peer and services, not on package stack. Clock.OnFire names every timer as it fires (for gVisor's TCP timers
// the method a breakpoint would be set on, such as
// tcp.(*sender).retransmitTimerExpired).
//
// # Why the driver waits for quiet
//
// Timers fire synchronously on the driver's goroutine, and the link delivers
// packets from timers too, so nearly everything happens where the driver can
// see it end. The exception is TCP: a segment delivered to a stack is not
// processed on the delivering goroutine. gVisor's TCP dispatcher
// (transport/tcp/dispatcher.go) queues it on its endpoint and wakes one of
// GOMAXPROCS processor goroutines, which runs the TCP state machine and
// sends the replies; this gVisor version has no option to process inline. If
// the driver moved the clock while a processor was still working, an ACK
// would be sent "later" than it was caused, or a retransmission timer would
// fire although the ACK that cancels it had already arrived: results would
// depend on the scheduler.
//
// Watching counters until they stop changing cannot tell a processor that
// is about to run from one that has finished, short of sleeping. gVisor has
// an exact barrier instead: Stack.Pause (its save/restore hook) asks each
// processor to park, and a processor parks only when its queue is empty,
// finishing its work first; Pause returns when all have parked, Resume lets
// them go. Replies are written to the link synchronously inside that work,
// so when Pause returns, every segment delivered before it has been
// processed and everything it caused is on the link, waiting for its own
// timer. The driver therefore fires one timer at a time and, after each that
// delivered packets into a stack (it watches the stack's IP
// PacketsReceived), pauses and resumes that stack; Settle also does so once
// up front for the socket calls made since the last step. No sleeps, no
// polling, and the cost is a few channel operations per processor.
//
// # Determinism
//
// Given the same options and the same socket calls, a run produces the same
// packets at the same virtual times with the same fault decisions: timers
// fire in deadline order with ties broken by arming order (unlike
// faketime.ManualClock, which breaks ties in map order), each packet is
// processed before the next timer fires, loss draws come from the fault
// controller's seeded generator, and Dial assigns local ports in order.
// gVisor's own random choices (initial sequence numbers, TCP timestamp
// offsets, IPv4 IDs) come from generators that netstack.New seeds from
// PairOptions.Seed, so the packets are byte-identical too. One more caveat:
// a delay rule that releases packets of different connections at the same
// instant hands them to gVisor together, and their replies may leave in
// either order.
//
// Pair and Conn are driven from one goroutine. Blocking on a gVisor waiter
// queue or using gonet would stall virtual time (and gonet's deadlines use
// real timers).
package vlink
