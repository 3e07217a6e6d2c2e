package services

import (
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/waiter"
)

// ServeKernel runs the built-in service name (http, echo, discard, sink,
// source) on fd, an accepted kernel TCP socket, with the same session code
// the peer runs on its gVisor endpoints: a server outside the peer (the
// iptables reference of `unplug exec --reference`, internal/reference)
// then offers exactly the peer's services. It returns when the session is
// done or done is closed, and closes fd. An unknown name is closed at once.
func ServeKernel(done <-chan struct{}, name string, fd int) {
	defer unix.Close(fd)
	switch name {
	case ServiceHTTP, ServiceEcho, ServiceDiscard, ServiceSink, ServiceSource:
	default:
		return
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return
	}
	sess := newSession(name)
	io := &kernelIO{fd: fd}
	var linger <-chan time.Time
	for {
		busy := sess.step(io)
		if sess.closed {
			return
		}
		if sess.lingering && linger == nil {
			t := time.NewTimer(lingerTime)
			defer t.Stop()
			linger = t.C
		}
		select {
		case <-done:
			return
		case <-linger:
			return
		default:
		}
		if busy {
			continue
		}
		// Wait for what the session can use now, a bounded time so that
		// done and the linger timer are noticed.
		ev := int16(0)
		m := sess.wants()
		if m&waiter.ReadableEvents != 0 {
			ev |= unix.POLLIN
		}
		if m&waiter.WritableEvents != 0 {
			ev |= unix.POLLOUT
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: ev}}
		unix.Poll(pfd, 50)
		if pfd[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0 && ev == 0 {
			io.gone = true
		}
	}
}

// kernelIO is a sessionIO on a non-blocking kernel socket.
type kernelIO struct {
	fd   int
	gone bool // poll reported an error or hang-up while nothing was wanted
}

func (k *kernelIO) read(buf []byte) (int, bool, tcpip.Error) {
	n, err := unix.Read(k.fd, buf)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return 0, false, nil
	case err != nil:
		return 0, false, &tcpip.ErrConnectionReset{}
	case n == 0:
		return 0, true, nil
	}
	return n, false, nil
}

func (k *kernelIO) write(b []byte) (int, tcpip.Error) {
	n, err := unix.SendmsgN(k.fd, b, nil, nil, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return 0, nil
	case err != nil:
		return max(n, 0), &tcpip.ErrConnectionReset{}
	}
	return n, nil
}

func (k *kernelIO) shutdownWrite() { unix.Shutdown(k.fd, unix.SHUT_WR) }

func (k *kernelIO) dead() bool {
	if k.gone {
		return true
	}
	v, err := unix.GetsockoptInt(k.fd, unix.SOL_SOCKET, unix.SO_ERROR)
	return err != nil || v != 0
}
