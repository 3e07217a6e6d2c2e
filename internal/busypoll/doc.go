// Package busypoll keeps the thread that runs a peer's goroutines from
// going to sleep for a short window after each burst of traffic, the way
// the kernel's busy_poll or a hypervisor's halt polling keep a CPU from
// idling.
//
// Why: a request through a peer wakes it twice (the client's segment, the
// upstream's reply). A thread asleep in epoll_wait whose vCPU has halted
// waits tens of microseconds for the hypervisor before it runs; on a
// 2-vCPU VM that never halt-polls that was most of a forward's round trip
// (docs/performance.md). With one P, a goroutine that simply spins keeps
// the Go scheduler from ever reaching its network poller; the spinner
// here instead watches the runtime's own epoll descriptor (readable
// whenever it holds an event) and, when it is, parks, so that the
// scheduler with nothing else to run polls the network and runs whatever
// was woken.
package busypoll
