package scenarios

import "golang.org/x/sys/unix"

// sendBuffer reads what decides how much a send into a dead link is
// accepted at once: SO_SNDBUF (the kernel's sk_sndbuf, as autotuned at the
// handshake by tcp_sndbuf_expand), the MSS, and the memory already queued
// (SO_MEMINFO's wmem_queued). ok is false once the socket is closed.
func (c *kernelConn) sendBuffer() (s sendBuf, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return s, false
	}
	var err error
	if s.SndBuf, err = unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_SNDBUF); err != nil {
		return s, false
	}
	if ti, err := unix.GetsockoptTCPInfo(c.fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
		s.MSS = int(ti.Snd_mss)
	}
	return s, true
}
