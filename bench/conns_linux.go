package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/services"
)

// connWave is how many connects are in flight at once.
const connWave = 256

// connsResult is what holding idle connections cost the peer's process.
type connsResult struct {
	held       int     // connections established and still healthy
	goPerConn  float64 // Go heap and stacks per connection, bytes
	rssPerConn float64 // resident set per connection, bytes
	probes     uint64  // packets the peer received while they idled
	heldFor    time.Duration
	unhealthy  int // client sockets that failed during the hold
}

// memSnapshot is the process's memory after a full collection.
type memSnapshot struct{ goBytes, rss uint64 }

func snapshotMemory() memSnapshot {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSnapshot{goBytes: ms.HeapInuse + ms.StackInuse, rss: residentBytes()}
}

// residentBytes reads VmRSS from /proc/self/status.
func residentBytes() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// idleConns opens n kernel connections from the namespace to the peer's
// sink service (which accepts and never reads, so the handler holds no
// buffer), with keepalive probing every second, holds them for at least
// hold and until the peer has received as many packets as there are
// connections (the probes), and
// measures the peer process's memory growth per connection. The client
// sockets are kept as bare descriptors so that they add nothing to the Go
// heap being measured.
func idleConns(ctx context.Context, e *env, n int, hold time.Duration) (connsResult, error) {
	var res connsResult
	port := services.DefaultSinkPort
	before := snapshotMemory()
	fds := make([]int, 0, n)
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for len(fds) < n {
		wave := min(connWave, n-len(fds))
		for range wave {
			fd, err := e.keepaliveSocket()
			if err != nil {
				return res, err
			}
			fds = append(fds, fd)
			err = unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: stack.DefaultAddr4.As4()})
			if err != nil && !errors.Is(err, unix.EINPROGRESS) {
				return res, fmt.Errorf("connect %d: %w", len(fds), err)
			}
		}
		if err := waitFor(ctx, 30*time.Second, func() bool { return sinkActive(e) >= len(fds) }); err != nil {
			return res, fmt.Errorf("the peer accepted %d of %d connections: %w", sinkActive(e), len(fds), err)
		}
	}
	// Every connection must be probed (and the probe answered) while held.
	in := e.peer.Fault.Stats().In.Load()
	start := time.Now()
	waitFor(ctx, 4*hold, func() bool { return e.peer.Fault.Stats().In.Load()-in >= uint64(n) && time.Since(start) >= hold })
	if err := ctx.Err(); err != nil {
		return res, err
	}
	res.probes = e.peer.Fault.Stats().In.Load() - in
	res.heldFor = time.Since(start)
	after := snapshotMemory()
	for _, fd := range fds {
		if !established(fd) {
			res.unhealthy++
		}
	}
	res.held = min(sinkActive(e), n-res.unhealthy)
	res.goPerConn = float64(int64(after.goBytes)-int64(before.goBytes)) / float64(n)
	res.rssPerConn = float64(int64(after.rss)-int64(before.rss)) / float64(n)
	return res, nil
}

// keepaliveSocket returns a non-blocking TCP socket created in the
// namespace, keepalive on (first probe after 1 s idle, then every second),
// as a bare descriptor.
func (e *env) keepaliveSocket() (int, error) {
	f, err := e.ns.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return -1, fmt.Errorf("client socket: %w", err)
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("client socket: %w", err)
	}
	fd := -1
	var serr error
	if err := rc.Control(func(s uintptr) {
		if fd, serr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0); serr != nil {
			return
		}
		for _, o := range [][3]int{
			{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 1},
			{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 1},
			{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 5},
		} {
			if serr = unix.SetsockoptInt(fd, o[0], o[1], o[2]); serr != nil {
				return
			}
		}
	}); err != nil {
		return -1, fmt.Errorf("client socket: %w", err)
	}
	if serr != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("client socket: %w", serr)
	}
	return fd, nil
}

// established reports whether the client socket fd is connected and has
// no pending error.
func established(fd int) bool {
	if soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || soerr != 0 {
		return false
	}
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	return err == nil && info.State == unix.BPF_TCP_ESTABLISHED
}

// sinkActive is the number of connections the peer's sink holds.
func sinkActive(e *env) int {
	for _, st := range e.peer.Services.Stats() {
		if st.Service == services.ServiceSink {
			return int(st.Active)
		}
	}
	return 0
}

// waitFor polls cond every millisecond until it holds, ctx ends or limit
// passes. Benchmarks may poll; tests never rely on how long this takes.
func waitFor(ctx context.Context, limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %s", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// fdLimit returns the process's soft limit on open descriptors.
func fdLimit() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 1024
	}
	return int(min(rl.Cur, 1<<30))
}
