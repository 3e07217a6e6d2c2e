package control

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// peerUID returns the uid of the process at the other end of c, as recorded
// by the kernel at connect time (SO_PEERCRED), so it cannot be forged.
func peerUID(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("get raw conn: %w", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, fmt.Errorf("get raw conn: %w", err)
	}
	if cerr != nil {
		return 0, fmt.Errorf("getsockopt SO_PEERCRED: %w", cerr)
	}
	return int(cred.Uid), nil
}
