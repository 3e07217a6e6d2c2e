package tun

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// RunAgentIfRequested turns this process into a namespace agent when
// NewNamespace started it as one, and exits when the agent is done;
// otherwise it returns at once. Call it first thing in main, and in TestMain
// of packages whose tests use namespaces, before flags are parsed.
func RunAgentIfRequested() {
	if os.Getenv(agentEnv) != "1" {
		return
	}
	os.Exit(runAgent())
}

// runAgent serves the parent until it closes the socket or dies. Asked
// for a namespace with its own TCP hash table, it first moves there
// (ownTable); that re-executes it, same process, and it serves from there.
func runAgent() int {
	if os.Getenv(agentEhashEnv) != "" {
		if err := ownTable(os.Getenv(agentEhashEnv)); err != nil {
			// The parent's init request gets the error.
			return failInit(err)
		}
	}
	if tw := os.Getenv(agentStageEnv); tw != "" {
		os.Unsetenv(agentStageEnv)
		if err := settleOwnTable(tw); err != nil {
			return failInit(err)
		}
	}
	os.Unsetenv(agentEnv)
	// Terminal signals go to the whole foreground process group; the agent
	// lives exactly as long as its parent wants. Notify (not Ignore) so that
	// programs it runs still get default dispositions.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP)
	conn, err := agentConn()
	if err != nil {
		fmt.Fprintf(os.Stderr, "unplug netns agent: %v\n", err)
		return 2
	}
	a := &agent{conn: conn, buf: make([]byte, maxMessage)}
	if err := a.serve(); err != nil {
		fmt.Fprintf(os.Stderr, "unplug netns agent: %v\n", err)
		return 1
	}
	return 0
}

// agentConn wraps the inherited socket, refusing anything else so that a
// stray UNPLUG_NS_AGENT=1 in the environment fails loudly.
func agentConn() (*net.UnixConn, error) {
	typ, err := unix.GetsockoptInt(agentFD, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_SEQPACKET {
		return nil, fmt.Errorf("%s=1 is set but descriptor %d is not an agent socket: unset %s", agentEnv, agentFD, agentEnv)
	}
	unix.CloseOnExec(agentFD)
	f := os.NewFile(agentFD, "agent-socket")
	defer f.Close()
	return fileUnixConn(f)
}

// agent is the helper process's state.
type agent struct {
	conn   *net.UnixConn
	buf    []byte
	inited bool
}

// testHookAnswered, set by tests, runs each time the agent has sent a
// response.
var testHookAnswered func()

// serve answers requests until the parent closes the socket.
func (a *agent) serve() error {
	for {
		var req request
		fds, err := receive(a.conn, a.buf, &req)
		if errors.Is(err, errEOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("receive request: %w", err)
		}
		resp, out := a.handle(req, fds)
		if err := sendResponse(a.conn, resp, out); err != nil {
			return err
		}
		if testHookAnswered != nil {
			testHookAnswered()
		}
	}
}

// handle runs one request; it owns fds and returns descriptors to send.
func (a *agent) handle(req request, fds []int) (response, []int) {
	var (
		resp response
		out  []int
		err  error
	)
	switch req.Op {
	case opInit:
		resp, out, err = a.init(req)
	case opSocket:
		out, err = newSocket(req.Domain, req.Type, req.Proto)
	case opSysctlSet:
		err = writeSysctl(req.Name, req.Value)
	case opSysctlGet:
		resp.Value, err = readSysctl(req.Name)
	case opRun:
		resp, err = startProgram(req, fds)
		fds = nil
	default:
		err = fmt.Errorf("namespace agent: unknown request %q", req.Op)
	}
	closeFDs(fds)
	resp.Err = encodeError(err)
	return resp, out
}

// init brings lo up, applies sysctls and creates the TUN, returning a
// duplicate of its descriptor. The agent keeps no copy, so the parent's
// Close removes the device.
func (a *agent) init(req request) (response, []int, error) {
	if a.inited {
		return response{}, nil, errors.New("namespace agent: already initialized")
	}
	a.inited = true
	if err := bringUpLoopback(); err != nil {
		return response{}, nil, err
	}
	deferred, err := applySysctls(req.Sysctls, req.TUN.Name)
	if err != nil {
		return response{}, nil, err
	}
	dev, err := Create(req.TUN)
	if err != nil {
		return response{}, nil, err
	}
	fd, err := dupFile(deviceFile(dev))
	dev.Close()
	if err != nil {
		return response{}, nil, err
	}
	for name, value := range deferred {
		if err := writeSysctl(name, value); err != nil {
			unix.Close(fd)
			return response{}, nil, err
		}
	}
	_, offload := dev.(*offloadDevice)
	return response{Name: dev.Name(), MTU: dev.MTU(), Offload: offload}, []int{fd}, nil
}

// ownTable moves the agent from the namespace the parent created (A) into
// a child namespace (B) with a TCP hash table of its own: the kernel sizes
// a new namespace's table from net.ipv4.tcp_child_ehash_entries of the
// namespace that creates it, so the agent sets that in A — its own, never
// the host's — unshares a network namespace on one locked thread and
// re-executes itself from that thread: the same process, single-threaded
// again, now entirely in B, where A's TIME_WAIT limit is restored (a table
// of its own would get half its size) — and without the CAP_SYS_ADMIN a
// rootless agent was given for the unshare. Where A's sysctls cannot be set (a
// kernel before 6.1 has no tcp_child_ehash_entries; a container mounts
// /proc/sys read-only) or the namespace cannot be created, it returns nil
// and the agent stays in A, sharing the host's table as before; after the
// unshare it returns only on failure.
func ownTable(entries string) error {
	os.Unsetenv(agentEhashEnv)
	tw, err := readSysctl("net.ipv4.tcp_max_tw_buckets")
	if err != nil {
		return nil
	}
	if err := writeSysctl("net.ipv4.tcp_child_ehash_entries", entries); err != nil {
		return nil
	}
	runtime.LockOSThread() // for good: the thread becomes the process
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil
	}
	// A rootless agent got CAP_SYS_ADMIN (ambient) only for the unshare:
	// lower it on this thread, whose credentials the re-executed agent and
	// every program it runs inherit (a root agent has no ambient set).
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_LOWER, unix.CAP_SYS_ADMIN, 0, 0); err != nil {
		return fmt.Errorf("own TCP hash table: drop CAP_SYS_ADMIN: %w", err)
	}
	env := append(os.Environ(), agentStageEnv+"="+tw)
	return fmt.Errorf("own TCP hash table: re-execute the agent: %w", syscall.Exec("/proc/self/exe", os.Args, env))
}

// settleOwnTable finishes ownTable in the new namespace: A's TIME_WAIT
// limit.
func settleOwnTable(tw string) error {
	if err := writeSysctl("net.ipv4.tcp_max_tw_buckets", tw); err != nil {
		return fmt.Errorf("own TCP hash table: %w", err)
	}
	return nil
}

// failInit answers the parent's init request with err (so NewNamespace
// returns it) and returns the agent's exit status.
func failInit(err error) int {
	conn, cerr := agentConn()
	if cerr != nil {
		fmt.Fprintf(os.Stderr, "unplug netns agent: %v\n", err)
		return 2
	}
	var req request
	fds, _ := receive(conn, make([]byte, maxMessage), &req)
	closeFDs(fds)
	send(conn, response{Err: encodeError(err)})
	conn.Close()
	return 1
}

// newSocket creates a close-on-exec, non-blocking socket in the agent's
// (the private) network namespace.
func newSocket(domain, typ, proto int) ([]int, error) {
	fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, proto)
	if err != nil {
		return nil, fmt.Errorf("socket(%d, %d, %d): %w", domain, typ, proto, err)
	}
	return []int{fd}, nil
}

// errMissingAgentCall is what an agent whose program never called
// RunAgentIfRequested reports instead of starting an agent of its own.
var errMissingAgentCall = errors.New("tun: this program was re-executed as a namespace agent but did not call " +
	"tun.RunAgentIfRequested(): call it first thing in main, and in TestMain of every test package that uses namespaces")

// refuseNestedAgent ends a process that was started as an agent yet went
// on to create a namespace itself: its main (or TestMain) lacks the
// RunAgentIfRequested call, and every agent would start another one. It
// answers the parent's pending request with the one-line error, so the
// parent's NewNamespace returns it, and exits.
func refuseNestedAgent() {
	if conn, err := agentConn(); err == nil {
		// Answer the init request once it is there: closing first would
		// fail the parent's send with EPIPE and hide the message.
		var req request
		fds, _ := receive(conn, make([]byte, maxMessage), &req)
		closeFDs(fds)
		send(conn, response{Err: encodeError(errMissingAgentCall)})
		conn.Close()
	} else {
		fmt.Fprintf(os.Stderr, "unplug: %v\n", errMissingAgentCall)
	}
	os.Exit(2)
}
