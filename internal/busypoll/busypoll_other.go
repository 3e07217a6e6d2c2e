//go:build !linux

package busypoll

import "time"

// Start does nothing outside Linux: there is no runtime epoll to watch.
func Start(window time.Duration) (stop func(), err error) { return func() {}, nil }

// Touch does nothing outside Linux.
func Touch(n int) {}

// Counters returns nil outside Linux.
func Counters() *Stats { return nil }

// Window returns 0 outside Linux.
func Window() time.Duration { return 0 }
