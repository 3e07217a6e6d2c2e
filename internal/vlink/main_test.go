package vlink

import (
	"testing"

	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/refs"
)

// TestMain fails the package if a test leaks a goroutine (gVisor's TCP
// processors must stop with Pair.Close) or a reference-counted gVisor object
// (packets the link or the fault layer hold must be released).
func TestMain(m *testing.M) {
	refs.SetLeakMode(refs.LeaksPanic)
	goleak.VerifyTestMain(refsChecked{m})
}

// refsChecked runs the tests, then gVisor's reference leak check, which
// panics if a packet buffer or buffer chunk was never released.
type refsChecked struct{ m *testing.M }

func (r refsChecked) Run() int {
	code := r.m.Run()
	if code == 0 {
		refs.DoLeakCheck()
	}
	return code
}
