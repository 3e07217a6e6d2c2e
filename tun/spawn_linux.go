package tun

import (
	"os/exec"
	"runtime"
)

// spawnLocked starts cmd from a goroutine locked to its OS thread and keeps
// that thread alive until cmd exits, then calls exited with Wait's result.
// The kernel sends Pdeathsig when the forking *thread* exits, not the
// process, and Go does end threads (one whose locked goroutine returns);
// a dedicated locked thread keeps the signal for the parent's real death.
func spawnLocked(cmd *exec.Cmd, exited func(error)) error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited(cmd.Wait())
	}()
	return <-started
}
