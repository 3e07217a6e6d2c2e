package busypoll

import "sync/atomic"

// Stats counts what the spinner did.
type Stats struct {
	// Polls counts polls of the runtime's epoll descriptor.
	Polls atomic.Uint64
	// Parks counts the times it parked to let the scheduler take an event.
	Parks atomic.Uint64
	// Windows counts spinning windows started by traffic after an idle spell.
	Windows atomic.Uint64
}
