package tun

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMissingAgentCall builds a test binary whose package forgets
// RunAgentIfRequested (testdata/noagent) and runs it: the re-executed
// agent must refuse to start an agent of its own, and the test must fail
// at once with the one-line error naming the call, not fork without end.
func TestMissingAgentCall(t *testing.T) {
	requireRoot(t)
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go command to build testdata/noagent")
	}
	bin := filepath.Join(t.TempDir(), "noagent.test")
	if out, err := exec.Command(goTool, "test", "-c", "-o", bin, "./testdata/noagent").CombinedOutput(); err != nil {
		t.Fatalf("build testdata/noagent: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-test.run=^TestNamespace$", "-test.v").CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the test binary without RunAgentIfRequested did not end in 2 minutes (agents starting agents?):\n%s", out)
	}
	if err == nil {
		t.Fatalf("the test binary without RunAgentIfRequested passed:\n%s", out)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "RunAgentIfRequested") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "did not call tun.RunAgentIfRequested()") ||
		!strings.Contains(lines[0], "TestMain") {
		t.Fatalf("want exactly one line naming the missing tun.RunAgentIfRequested() call and TestMain, got:\n%s", out)
	}
}
