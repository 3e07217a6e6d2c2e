package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// binaryEnv passes the path of an already built unplug binary to re-executed
// test processes, so that they do not build it again.
const binaryEnv = "UNPLUG_TEST_BINARY"

var built struct {
	once sync.Once
	dir  string // removed by TestMain; empty if this process built nothing
	path string
	err  error
	out  []byte
}

// unplugBinary returns the path of a static unplug binary built the way the
// Dockerfile builds it (CGO_ENABLED=0, -trimpath), in a directory every user
// may enter, so that tests can run it as another uid or in an empty root.
// The first call builds it; the build is shared by the whole test process
// and by processes it re-executes.
func unplugBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(binaryEnv); p != "" {
		return p
	}
	built.once.Do(func() {
		// The go command that runs this test puts its own directory first
		// on PATH, so this is the toolchain building the tests.
		goTool, err := exec.LookPath("go")
		if err != nil {
			built.err = fmt.Errorf("no go command on PATH to build unplug: %w", err)
			return
		}
		if built.dir, built.err = os.MkdirTemp("", "unplug-bin-"); built.err != nil {
			return
		}
		if built.err = os.Chmod(built.dir, 0o755); built.err != nil {
			return
		}
		path := filepath.Join(built.dir, "unplug")
		cmd := exec.Command(goTool, "build", "-trimpath", "-o", path, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if built.out, built.err = cmd.CombinedOutput(); built.err == nil {
			built.path = path
			os.Setenv(binaryEnv, path) // inherited by re-executed tests
		}
	})
	if built.err != nil {
		t.Fatalf("go build ./cmd/unplug: %v\n%s", built.err, built.out)
	}
	return built.path
}

// removeBuiltBinary deletes what unplugBinary built in this process.
func removeBuiltBinary() {
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
}
