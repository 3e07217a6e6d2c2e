package sockdiag

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// NetnsInode returns the inode of the network namespace process pid is in
// (the N of /proc/PID/ns/net -> "net:[N]"); pid 0 means the caller. For a
// tun.Namespace, NetnsInode(ns.PID()) names its private namespace.
func NetnsInode(pid int) (uint64, error) {
	p := "/proc/self/ns/net"
	if pid != 0 {
		p = "/proc/" + strconv.Itoa(pid) + "/ns/net"
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return 0, fmt.Errorf("network namespace of pid %d: %w", pid, err)
	}
	return st.Ino, nil
}

// FindSockets scans /proc for processes in the network namespace with
// inode netnsIno (compare /proc/PID/ns/net) and returns their socket
// descriptors (readlink /proc/PID/fd/N = "socket:[INODE]"), of every kind:
// match Inode against Socket.Inode to find the TCP ones. Processes that
// exit during the scan, or whose descriptors the caller may not read, are
// skipped. Threads share their process's descriptors and are not listed
// separately.
func FindSockets(netnsIno uint64) ([]ProcSocket, error) {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("find sockets: %w", err)
	}
	var out []ProcSocket
	link := make([]byte, 64)
	for _, e := range procs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		if ino, err := NetnsInode(pid); err != nil || ino != netnsIno {
			continue
		}
		out = appendProcSockets(out, pid, link)
	}
	return out, nil
}

// appendProcSockets appends pid's socket descriptors.
func appendProcSockets(out []ProcSocket, pid int, link []byte) []ProcSocket {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	fds, err := os.ReadDir(dir)
	if err != nil {
		return out
	}
	comm := ""
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm"); err == nil {
		comm = strings.TrimSuffix(string(b), "\n")
	}
	for _, e := range fds {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		n, err := unix.Readlink(dir+"/"+e.Name(), link)
		if err != nil {
			continue
		}
		if ino, ok := socketInode(link[:n]); ok {
			out = append(out, ProcSocket{PID: pid, FD: fd, Inode: ino, Comm: comm})
		}
	}
	return out
}

// socketInode parses the target of a socket descriptor's link,
// "socket:[12345]".
func socketInode(link []byte) (uint64, bool) {
	s, ok := strings.CutPrefix(string(link), "socket:[")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, "]")
	if !ok {
		return 0, false
	}
	ino, err := strconv.ParseUint(s, 10, 64)
	return ino, err == nil
}

// ReadOptions duplicates descriptor fd of process pid with pidfd_open +
// pidfd_getfd and reads its options. The duplicate is closed before
// returning; the program's socket is not changed.
//
// pidfd_getfd needs ptrace access (PTRACE_MODE_ATTACH) to the process: a
// parent over a child it started qualifies, rootless too when the child
// runs in a user namespace the parent created. Otherwise the error (which
// matches unix.EPERM) says what is missing.
func ReadOptions(pid, fd int) (Options, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return Options{}, getfdError(pid, fd, "pidfd_open", err)
	}
	defer unix.Close(pidfd)
	sfd, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return Options{}, getfdError(pid, fd, "pidfd_getfd", err)
	}
	defer unix.Close(sfd)
	o, err := readOptions(sfd)
	if err != nil {
		return Options{}, fmt.Errorf("read socket options of pid %d fd %d: %w", pid, fd, err)
	}
	return o, nil
}

// readOptions reads the options of a TCP socket descriptor of our own.
func readOptions(fd int) (Options, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Options{}, fmt.Errorf("fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return Options{}, errors.New("descriptor is not a socket")
	}
	if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_STREAM {
		return Options{}, errors.New("descriptor is not a TCP socket")
	}
	if proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || proto != unix.IPPROTO_TCP {
		return Options{}, errors.New("descriptor is not a TCP socket")
	}
	o := Options{Inode: st.Ino}
	var errs []error
	get := func(level, opt int, name string) int {
		v, err := unix.GetsockoptInt(fd, level, opt)
		if err != nil {
			errs = append(errs, fmt.Errorf("getsockopt %s: %w", name, err))
		}
		return v
	}
	o.KeepAlive = get(unix.SOL_SOCKET, unix.SO_KEEPALIVE, "SO_KEEPALIVE") != 0
	o.KeepIdle = time.Duration(get(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, "TCP_KEEPIDLE")) * time.Second
	o.KeepIntvl = time.Duration(get(unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, "TCP_KEEPINTVL")) * time.Second
	o.KeepCnt = get(unix.IPPROTO_TCP, unix.TCP_KEEPCNT, "TCP_KEEPCNT")
	o.UserTimeout = time.Duration(get(unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT")) * time.Millisecond
	o.SynCnt = get(unix.IPPROTO_TCP, unix.TCP_SYNCNT, "TCP_SYNCNT")
	o.NoDelay = get(unix.IPPROTO_TCP, unix.TCP_NODELAY, "TCP_NODELAY") != 0
	o.SndBuf = get(unix.SOL_SOCKET, unix.SO_SNDBUF, "SO_SNDBUF")
	o.RcvBuf = get(unix.SOL_SOCKET, unix.SO_RCVBUF, "SO_RCVBUF")
	return o, errors.Join(errs...)
}

// getfdError explains a failed pidfd_open or pidfd_getfd; the result
// matches the errno with errors.Is.
func getfdError(pid, fd int, call string, err error) error {
	prefix := fmt.Sprintf("read socket options of pid %d fd %d: %s", pid, fd, call)
	var msg string
	switch {
	case errors.Is(err, unix.ESRCH):
		msg = fmt.Sprintf("%s: process %d has exited", prefix, pid)
	case errors.Is(err, unix.EBADF):
		msg = fmt.Sprintf("%s: process %d has no descriptor %d (closed since it was listed)", prefix, pid, fd)
	case errors.Is(err, unix.ENOSYS):
		msg = fmt.Sprintf("%s: not supported by this kernel (pidfd_getfd needs Linux 5.6 or later)", prefix)
	case errors.Is(err, unix.EPERM):
		msg = fmt.Sprintf("%s: operation not permitted: %s", prefix, ptraceHint())
	default:
		return fmt.Errorf("%s: %w", prefix, err)
	}
	return &causeError{msg: msg, err: err}
}

// causeError is a complete one-line message that still matches its cause
// with errors.Is.
type causeError struct {
	msg string
	err error
}

func (e *causeError) Error() string { return e.msg }
func (e *causeError) Unwrap() error { return e.err }

// ptraceHint says what ptrace access (PTRACE_MODE_ATTACH) requires under
// this machine's Yama setting.
func ptraceHint() string {
	scope := "0"
	if b, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope"); err == nil {
		scope = strings.TrimSpace(string(b))
	}
	const base = "reading another process's descriptor needs ptrace access to it"
	switch scope {
	case "0":
		return base + ": run as the same user as the process (which must not be set-uid or hold capabilities the caller lacks), or with CAP_SYS_PTRACE"
	case "1":
		return base + ": with kernel.yama.ptrace_scope=1 only an ancestor running as the same user (e.g. the unplug that started it), or CAP_SYS_PTRACE, has it"
	case "2":
		return base + ": kernel.yama.ptrace_scope=2 requires CAP_SYS_PTRACE (run as root or with --cap-add SYS_PTRACE)"
	case "3":
		return base + ": kernel.yama.ptrace_scope=3 forbids it until reboot"
	default:
		return base + " (kernel.yama.ptrace_scope=" + scope + ")"
	}
}
