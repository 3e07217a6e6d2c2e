// Package netns runs code inside another network namespace from a Go
// program: a locked OS thread is switched in, runs the function, and is
// switched back. The reference labs (two namespaces made with `ip netns
// add`) use it to place iptables rules, open packet sockets and read
// sysctls without an `ip netns exec` per operation.
package netns

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn on an OS thread inside the network namespace whose file is
// path (for a named namespace, /run/netns/NAME). Sockets fn opens belong
// to that namespace and stay there. If the thread cannot switch back it is
// left locked, so the Go runtime discards it instead of reusing it in the
// wrong namespace.
func Do(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", path, err)
			return
		}
		err = fn()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// Named returns the file of the namespace `ip netns add NAME` made.
func Named(name string) string { return "/run/netns/" + name }
