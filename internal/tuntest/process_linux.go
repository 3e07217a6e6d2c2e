package tuntest

import (
	"bytes"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// AwaitExit waits, through a pidfd rather than by polling, until pid has
// exited, and fails the test if it is still running after timeout (a
// safety bound that guards against hangs, never a timing assertion).
func AwaitExit(t testing.TB, pid int, timeout time.Duration) {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err == unix.ESRCH {
		return
	}
	if err != nil {
		t.Fatalf("pidfd_open(%d): %v", pid, err)
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(timeout/time.Millisecond))
		if err == unix.EINTR {
			continue
		}
		if err != nil || n != 1 {
			t.Fatalf("process %d (%s) still running after %v (poll: %d, %v)", pid, Cmdline(pid), timeout, n, err)
		}
		return
	}
}

// Cmdline is pid's argv[0], for naming a process in a failure; "" once it
// is gone.
func Cmdline(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return ""
	}
	arg0, _, _ := bytes.Cut(b, []byte{0})
	return string(arg0)
}
