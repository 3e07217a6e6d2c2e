package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// safetyTimeout bounds waits that should end long before it; it guards
// against hangs and is never what a test asserts on.
const safetyTimeout = 60 * time.Second

// readyPrefix starts the line serve prints once the peer answers.
const readyPrefix = "unplug: peer "

// proc is an unplug process started by a test, with its output.
type proc struct {
	cmd    *exec.Cmd
	stdout lineWatch
	stderr lineWatch
	done   chan struct{} // closed when the process has been waited for
	err    error         // Wait's result, set before done closes
}

// lineWatch collects output and closes ready when a line starting with
// prefix has been written.
type lineWatch struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	prefix string
	ready  chan struct{}
	once   sync.Once
}

func (w *lineWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.prefix != "" {
		for _, line := range strings.Split(w.buf.String(), "\n") {
			if strings.HasPrefix(line, w.prefix) {
				w.once.Do(func() { close(w.ready) })
			}
		}
	}
	return len(p), nil
}

func (w *lineWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// procSpec says how to start a process: argv, and optionally credentials,
// namespaces or a root directory (attr), an environment (nil inherits the
// test's) and a working directory.
type procSpec struct {
	argv []string
	attr *syscall.SysProcAttr
	env  []string
	dir  string
}

// startProc starts a process, waiting for nothing. The test's cleanup kills
// it if it still runs.
func startProc(t *testing.T, spec procSpec) *proc {
	t.Helper()
	p := &proc{done: make(chan struct{})}
	p.stdout = lineWatch{prefix: readyPrefix, ready: make(chan struct{})}
	p.cmd = exec.Command(spec.argv[0], spec.argv[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.SysProcAttr = spec.attr
	p.cmd.Env = spec.env
	p.cmd.Dir = spec.dir
	p.cmd.WaitDelay = safetyTimeout // a leaked descendant holding stdout must not hang Wait
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", strings.Join(spec.argv, " "), err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// awaitReady waits for serve's ready line; it fails the test if the
// process exits first.
func (p *proc) awaitReady(t *testing.T) {
	t.Helper()
	select {
	case <-p.stdout.ready:
	case <-p.done:
		t.Fatalf("exited before it was ready (%v)\nstdout:\n%s\nstderr:\n%s", p.err, p.stdout.String(), p.stderr.String())
	case <-time.After(safetyTimeout):
		t.Fatalf("not ready\nstdout:\n%s\nstderr:\n%s", p.stdout.String(), p.stderr.String())
	}
}

// wait waits for the process to exit and returns its exit code (-1 when a
// signal killed it).
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(safetyTimeout):
		t.Fatalf("still running\nstdout:\n%s\nstderr:\n%s", p.stdout.String(), p.stderr.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

// signal sends sig to the process.
func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// descendants returns the pids of every process below pid, read from
// /proc (children first seen are listed before their own children).
func descendants(pid int) []int {
	parent := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, ok := ppidOf(child); ok {
			parent[pp] = append(parent[pp], child)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range parent[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// ppidOf reads a process's parent pid from /proc/PID/stat.
func ppidOf(pid int) (int, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// The command name may contain spaces and parentheses; fields
	// resume after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, false
	}
	pp, err := strconv.Atoi(f[1])
	return pp, err == nil
}

// netnsOf returns the inode of pid's network namespace.
func netnsOf(t *testing.T, pid int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
		t.Fatalf("network namespace of %d: %v", pid, err)
	}
	return st.Ino
}

// netnsHolders lists every process that is in, or holds a descriptor of,
// the network namespace with inode ino. Empty means the namespace is
// unreachable: the kernel frees it once the last socket or TUN descriptor
// created in it is closed, and those belong to processes too, which the
// callers check separately (descendants, the test's own descriptors).
func netnsHolders(ino uint64) []string {
	want := fmt.Sprintf("net:[%d]", ino)
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		dir := filepath.Join("/proc", e.Name())
		if l, _ := os.Readlink(filepath.Join(dir, "ns", "net")); l == want {
			out = append(out, fmt.Sprintf("pid %s (%s) runs in it", e.Name(), cmdlineOf(dir)))
			continue
		}
		fds, _ := os.ReadDir(filepath.Join(dir, "fd"))
		for _, fd := range fds {
			if l, _ := os.Readlink(filepath.Join(dir, "fd", fd.Name())); l == want {
				out = append(out, fmt.Sprintf("pid %s (%s) holds it as fd %s", e.Name(), cmdlineOf(dir), fd.Name()))
			}
		}
	}
	return out
}

func cmdlineOf(dir string) string {
	b, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
	return strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
}

// openFDs lists this process's open descriptors and what they refer to.
func openFDs(t *testing.T) map[string]string {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, fd := range fds {
		l, err := os.Readlink("/proc/self/fd/" + fd.Name())
		if err == nil {
			out[fd.Name()] = l
		}
	}
	return out
}

// dialInNetns connects to address from inside the network namespace of
// pid, through the host kernel's TCP: the socket is created by a thread
// that joins that namespace for the moment of the socket call only.
func dialInNetns(t *testing.T, pid int, address string) net.Conn {
	t.Helper()
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		t.Fatal(err)
	}
	target, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open netns of %d: %v", pid, err)
	}
	defer unix.Close(target)
	domain := unix.AF_INET6
	if ap.Addr().Is4() {
		domain = unix.AF_INET
	}
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, err}
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, err}
			return
		}
		fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else the thread stays locked and ends with this goroutine
		ch <- result{fd, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("socket in netns of %d: %v", pid, r.err)
	}
	tv := unix.NsecToTimeval(int64(safetyTimeout))
	unix.SetsockoptTimeval(r.fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	var sa unix.Sockaddr = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	if ap.Addr().Is4() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	if err := unix.Connect(r.fd, sa); err != nil {
		unix.Close(r.fd)
		t.Fatalf("connect %s in netns of %d: %v", address, pid, err)
	}
	f := os.NewFile(uintptr(r.fd), "netns-conn")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// httpGet sends a request for path on c and returns the whole reply.
func httpGet(t *testing.T, c net.Conn, path string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(safetyTimeout))
	fmt.Fprintf(c, "GET %s HTTP/1.0\r\n\r\n", path)
	var b bytes.Buffer
	if _, err := b.ReadFrom(c); err != nil {
		t.Fatalf("read reply to GET %s: %v", path, err)
	}
	return b.String()
}

// requireTools skips the test unless every named program is installed.
func requireTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("needs %s (make deps installs it)", n)
		}
	}
}

// requireRoot skips the test unless it runs as root.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates namespaces and TUN devices")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun")
	}
}

// runCLI runs the built binary with args in the caller's namespaces and
// returns its exit code, stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runSpec(t, procSpec{argv: append([]string{unplugBinary(t)}, args...)})
}

// runSpec runs a process to its end and returns its exit code, stdout and
// stderr.
func runSpec(t *testing.T, spec procSpec) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, spec.argv[0], spec.argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = spec.attr
	cmd.Env = spec.env
	cmd.Dir = spec.dir
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s did not finish\nstdout:\n%s\nstderr:\n%s", strings.Join(spec.argv, " "), &stdout, &stderr)
	}
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("run %s: %v", strings.Join(spec.argv, " "), err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// notWired reports whether a command answered with the placeholder that
// stands in for `run`, `exec` and `scenarios` until they are implemented.
func notWired(stderr string) bool {
	return strings.TrimSpace(stderr) == "unplug: todo"
}

// oneLine fails unless s is exactly one newline-terminated line.
func oneLine(t *testing.T, what, s string) {
	t.Helper()
	if !strings.HasSuffix(s, "\n") || strings.Count(s, "\n") != 1 {
		t.Errorf("%s is not exactly one line:\n%q", what, s)
	}
}

// containsAll fails for each of subs that s lacks.
func containsAll(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s %q does not mention %q", what, strings.TrimSpace(s), sub)
		}
	}
}

// interfaceNames lists the interfaces of the caller's network namespace.
func interfaceNames(t *testing.T) []string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	slices.Sort(names)
	return names
}
