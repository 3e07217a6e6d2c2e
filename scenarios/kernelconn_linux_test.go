package scenarios

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// loopbackConns returns n kernelConns connected to a listener on 127.0.0.1
// (loopback of the test's own namespace) and the accepted server ends.
func loopbackConns(t *testing.T, n int) ([]*kernelConn, []net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	to := netip.MustParseAddrPort(ln.Addr().String())
	start := time.Now()
	now := func() time.Duration { return time.Since(start) }
	var clients []*kernelConn
	var servers []net.Conn
	for range n {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		c, err := newKernelConn(os.NewFile(uintptr(fd), "client"), now)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.connect(to, 0); err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		clients = append(clients, c)
		servers = append(servers, s)
	}
	return clients, servers
}

// threads returns the number of OS threads of this process.
func threads(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads line in /proc/self/status")
	return 0
}

// TestKernelConnWaitsInPoller checks the mechanism behind unplug run's
// fidelity: a client call that waits (recv on an idle connection) parks in
// Go's poller instead of holding an OS thread in the kernel. A thread held
// in recv(2) keeps its P, and when it was the one polling the network the
// TUN is not read until sysmon notices, 10 ms later: the kernel then
// measured an 11–13 ms handshake RTT and every RTO moved. 64 blocked
// readers on blocking sockets need 64 threads; in the poller, a handful.
func TestKernelConnWaitsInPoller(t *testing.T) {
	const n = 64
	clients, servers := loopbackConns(t, n)
	before := threads(t)
	var wg sync.WaitGroup
	got := make(chan string, n)
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 16)
			k, err := c.Read(buf)
			if err != nil {
				got <- err.Error()
				return
			}
			got <- string(buf[:k])
		}()
	}
	time.Sleep(200 * time.Millisecond) // let every reader reach its wait
	during := threads(t)
	for i, s := range servers {
		if _, err := s.Write([]byte("r" + strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(got)
	for m := range got {
		if !strings.HasPrefix(m, "r") {
			t.Errorf("a reader got %q, want the server's reply", m)
		}
	}
	if during-before >= n/4 {
		t.Errorf("%d readers waiting took %d extra OS threads (from %d to %d); they must wait in the poller, not in recv(2)", n, during-before, before, during)
	}
}

// TestKernelConnBlockingSemantics checks that the poller-driven conn keeps
// what a blocking socket does: a send into a full buffer that a deadline
// cuts off returns the short count it queued, a recv past its deadline
// fails with os.ErrDeadlineExceeded, and the peer's close is io.EOF.
func TestKernelConnBlockingSemantics(t *testing.T) {
	clients, servers := loopbackConns(t, 2)
	c, s := clients[0], servers[1]
	if err := unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096); err != nil {
		t.Fatal(err)
	}

	if err := c.SetDeadline(c.now() + 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 8<<20) // far more than both buffers hold: the server never reads
	n, err := c.Write(big)
	if err != nil || n <= 0 || n >= len(big) {
		t.Errorf("send into a full buffer until the deadline = %d, %v; want a short count and no error", n, err)
	}
	if n, err := c.Write(big); !errors.Is(err, os.ErrDeadlineExceeded) || n != 0 {
		t.Errorf("send after the deadline = %d, %v; want 0 and a deadline error", n, err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("recv after the deadline: %v; want os.ErrDeadlineExceeded", err)
	}

	s.Close() // a clean FIN: this server end has nothing unread
	if n, err := clients[1].Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("recv after the peer closed = %d, %v; want io.EOF", n, err)
	}
}
