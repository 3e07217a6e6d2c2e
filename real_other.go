//go:build !linux

package unplug

import (
	"fmt"
	"runtime"

	"github.com/unplug-dev/unplug/stack/fault"
)

// newReal fails with ErrUnavailable: the Real clock needs Linux network
// namespaces.
func newReal(Options, []fault.Spec) (world, error) {
	return nil, fmt.Errorf("%w: it needs Linux (a private network namespace with a TUN device), this is %s; use unplug.Virtual",
		ErrUnavailable, runtime.GOOS)
}
