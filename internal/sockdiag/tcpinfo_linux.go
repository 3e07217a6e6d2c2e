package sockdiag

import "golang.org/x/sys/unix"

// TCPInfo is the kernel's struct tcp_info as golang.org/x/sys/unix
// defines it (the type of Socket.Info).
type TCPInfo = unix.TCPInfo
