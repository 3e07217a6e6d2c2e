package fault

import (
	"testing"

	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/refs"
)

// TestMain fails the package if a test leaks a goroutine or a gVisor packet
// buffer: every packet the layer holds, copies or makes up must be released.
func TestMain(m *testing.M) {
	refs.SetLeakMode(refs.LeaksPanic)
	goleak.VerifyTestMain(refsChecked{m})
}

// refsChecked runs the tests, then gVisor's reference leak check.
type refsChecked struct{ m *testing.M }

func (r refsChecked) Run() int {
	code := r.m.Run()
	if code == 0 {
		refs.DoLeakCheck()
	}
	return code
}
