//go:build !linux

package bench

import (
	"context"
	"fmt"
	"runtime"
)

// Run needs TUN devices and network namespaces; on this OS it fails.
func Run(ctx context.Context, opts Options) (*Report, error) {
	return nil, fmt.Errorf("bench: needs Linux (TUN devices and network namespaces), this is %s: run it in a Linux VM or container", runtime.GOOS)
}

// kernelRelease names the OS instead.
func kernelRelease() string { return runtime.GOOS }

// RunUpstreamsIfRequested returns at once: the forwarding rows that
// re-execute a binary as their upstream servers run only on Linux.
func RunUpstreamsIfRequested() {}
