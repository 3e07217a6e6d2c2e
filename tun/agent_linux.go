package tun

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
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

// runAgent serves the parent until it closes the socket or dies.
func runAgent() int {
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
