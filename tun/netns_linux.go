package tun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Environment variables that mark a process as a namespace agent.
const (
	agentEnv = "UNPLUG_NS_AGENT"
	// agentEhashEnv asks the agent for a namespace with its own TCP hash
	// table of this many buckets; agentStageEnv marks the agent after it
	// moved into that namespace, with the TIME_WAIT limit to restore.
	agentEhashEnv = "UNPLUG_NS_AGENT_EHASH"
	agentStageEnv = "UNPLUG_NS_AGENT_TW"
	// agentFD is the agent's end of the socketpair (ExtraFiles[0]).
	agentFD = 3
)

// agentCaps are the capabilities a rootless agent keeps across exec, inside
// its own user namespace only: configure the namespace's network, open raw
// sockets, bind low ports. Programs Run starts inherit them, so tools such
// as tcpdump or ip work inside the namespace too.
var agentCaps = []uintptr{unix.CAP_NET_ADMIN, unix.CAP_NET_RAW, unix.CAP_NET_BIND_SERVICE}

// Namespace is a private network namespace holding a TUN device, built and
// served by a helper ("agent") process. The caller's own process, with its
// netstack, stays in its original namespace; client sockets and programs
// are created inside the private one through the agent.
//
// Everything disappears when the Namespace is closed: the agent is killed,
// and the namespace goes away with the last descriptor that refers to it
// (the TUN and any sockets handed out, which the caller must close).
type Namespace struct {
	cmd  *exec.Cmd
	conn *net.UnixConn
	dev  Device

	mu  sync.Mutex // serializes requests on conn
	buf []byte     // response buffer, guarded by mu

	done      chan struct{} // closed once the agent has exited
	waitErr   error         // the agent's exit status; set before done closes
	closing   chan struct{} // closed when Close starts
	closeOnce sync.Once
}

// NewNamespace starts an agent in a new network namespace (and, unless the
// caller is uid 0 with CAP_SYS_ADMIN, a new user namespace mapping the
// caller's uid and gid to themselves: uid 0 in a container usually lacks
// CAP_SYS_ADMIN but may still create a user namespace), where it brings lo up, applies cfg.Sysctls and creates the
// TUN device described by cfg.TUN. Its process must call
// RunAgentIfRequested first thing in main (or TestMain).
//
// Errors name the precondition that failed and its fix, and match
// ErrPermission, ErrNoTunDevice or ErrExists with errors.Is.
func NewNamespace(ctx context.Context, cfg NamespaceConfig) (*Namespace, error) {
	if os.Getenv(agentEnv) == "1" {
		refuseNestedAgent()
	}
	tcfg, err := cfg.TUN.normalize()
	if err != nil {
		return nil, err
	}
	for name := range cfg.Sysctls {
		if _, err := sysctlPath(name); err != nil {
			return nil, err
		}
	}
	rootless := !canCreateNetns()
	if rootless {
		if err := checkRootless(); err != nil {
			return nil, err
		}
	}
	ehash := cfg.EhashEntries
	if ehash == 0 {
		ehash = DefaultEhashEntries
	}
	ns, err := startAgent(rootless, max(ehash, 0))
	if err != nil {
		return nil, err
	}
	if err := ns.init(ctx, tcfg, cfg.Sysctls); err != nil {
		ns.Close()
		return nil, rootlessInitError(err, rootless)
	}
	return ns, nil
}

// rootlessInitError explains an EPERM while a rootless agent sets up: the
// user namespace granted no capabilities, which the caller cannot fix by
// running unplug run/exec (the agent's own advice).
func rootlessInitError(err error, rootless bool) error {
	if !rootless || !errors.Is(err, unix.EPERM) {
		return err
	}
	return newUserError(ErrPermission, err,
		"set up private network namespace as uid %d: operation not permitted inside the user namespace: %s",
		os.Geteuid(), usernsHint(true))
}

// startAgent re-executes this program as the agent inside new namespaces;
// with ehash > 0 the agent moves on into a namespace with its own TCP hash
// table of that size (see runAgent).
func startAgent(rootless bool, ehash int) (*Namespace, error) {
	conn, theirs, err := socketPair()
	if err != nil {
		return nil, err
	}
	defer theirs.Close()
	ns := &Namespace{
		conn:    conn,
		buf:     make([]byte, maxMessage),
		done:    make(chan struct{}),
		closing: make(chan struct{}),
	}
	ns.cmd = agentCommand(theirs, rootless, ehash)
	if err := spawnLocked(ns.cmd, ns.exited); err != nil {
		conn.Close()
		return nil, cloneError(err, rootless)
	}
	return ns, nil
}

// agentCommand builds the agent's command line and namespace flags. An
// agent that makes its own table (ehash > 0) needs CAP_SYS_ADMIN in its
// user namespace to create the second network namespace; it drops it
// before it serves (ownTable).
func agentCommand(sock *os.File, rootless bool, ehash int) *exec.Cmd {
	attr := &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET,
		Pdeathsig:  syscall.SIGKILL,
	}
	if rootless {
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: os.Geteuid(), HostID: os.Geteuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: os.Getegid(), HostID: os.Getegid(), Size: 1}}
		attr.GidMappingsEnableSetgroups = false
		attr.AmbientCaps = agentCaps
		if ehash > 0 {
			attr.AmbientCaps = append(append([]uintptr(nil), agentCaps...), unix.CAP_SYS_ADMIN)
		}
	}
	env := append(os.Environ(), agentEnv+"=1")
	if ehash > 0 {
		env = append(env, fmt.Sprintf("%s=%d", agentEhashEnv, ehash))
	}
	return &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        []string{"unplug-netns-agent"},
		Env:         env,
		ExtraFiles:  []*os.File{sock},
		Stderr:      os.Stderr,
		SysProcAttr: attr,
	}
}

// exited records the agent's exit; spawnLocked calls it once.
func (ns *Namespace) exited(err error) {
	ns.waitErr = err
	close(ns.done)
}

// init asks the agent to set the namespace up and receives the TUN.
func (ns *Namespace) init(ctx context.Context, cfg Config, sysctls map[string]string) error {
	resp, files, err := ns.call(ctx, request{Op: opInit, TUN: cfg, Sysctls: sysctls})
	if err != nil {
		return err
	}
	if len(files) != 1 {
		closeFDs(files)
		return fmt.Errorf("namespace agent: expected the TUN descriptor, got %d", len(files))
	}
	f, err := fileFromFD(files[0], resp.Name)
	if err != nil {
		return err
	}
	if !resp.Offload {
		ns.dev = newFileDevice(f, resp.Name, resp.MTU)
		return nil
	}
	dev, err := newOffloadDevice(f, resp.Name, resp.MTU)
	if err != nil {
		f.Close()
		return err
	}
	ns.dev = dev
	return nil
}

// call sends one request and waits for its response. ctx bounds the wait. Descriptors in fds are sent, not closed.
func (ns *Namespace) call(ctx context.Context, req request, fds ...int) (response, []int, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	select {
	case <-ns.closing:
		return response{}, nil, fmt.Errorf("namespace: %w", ErrClosed)
	default:
	}
	stop := context.AfterFunc(ctx, func() { ns.conn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() {
			ns.conn.SetDeadline(time.Time{})
		}
	}()
	var resp response
	err := send(ns.conn, req, fds...)
	var files []int
	if err == nil {
		files, err = receiveResponse(ns.conn, ns.buf, &resp)
	}
	if err != nil {
		return resp, nil, ns.callError(ctx, req.Op, err)
	}
	if resp.Err != nil {
		closeFDs(files)
		return resp, nil, resp.Err.decode()
	}
	return resp, files, nil
}

// callError explains a failed exchange: a cancelled context, a closed
// Namespace, or a dead agent.
func (ns *Namespace) callError(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("namespace %s: %w", op, ctx.Err())
	}
	select {
	case <-ns.closing:
		return fmt.Errorf("namespace %s: %w", op, ErrClosed)
	default:
	}
	if errors.Is(err, errEOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
		return ns.goneError(op)
	}
	return fmt.Errorf("namespace %s: %w", op, err)
}

// goneError waits for the agent to be gone and says why: Close (ErrClosed)
// or its own death (ErrAgentDied). Close wins when both happened.
func (ns *Namespace) goneError(op string) error {
	select {
	case <-ns.closing:
	case <-ns.done:
	}
	select {
	case <-ns.closing:
		return fmt.Errorf("namespace %s: %w", op, ErrClosed)
	default:
		return ns.agentDied()
	}
}

// agentDied describes the agent's unexpected exit.
func (ns *Namespace) agentDied() error {
	return fmt.Errorf("%w: %v", ErrAgentDied, ns.waitErr)
}

// Device returns the TUN device inside the namespace. Closing the
// Namespace closes it too.
func (ns *Namespace) Device() Device { return ns.dev }

// PID returns the agent's process id, e.g. for nsenter -t PID -n.
func (ns *Namespace) PID() int { return ns.cmd.Process.Pid }

// Socket creates a socket inside the namespace and returns it as a
// non-blocking, close-on-exec file. The socket stays in the namespace
// wherever it is used: connect, setsockopt and send on it as usual, through
// net.FileConn, net.FilePacketConn or f.SyscallConn (f.Fd switches it to
// blocking mode). The caller closes it.
func (ns *Namespace) Socket(domain, typ, proto int) (*os.File, error) {
	_, files, err := ns.call(context.Background(), request{Op: opSocket, Domain: domain, Type: typ, Proto: proto})
	if err != nil {
		return nil, err
	}
	if len(files) != 1 {
		closeFDs(files)
		return nil, fmt.Errorf("namespace socket: expected one descriptor, got %d", len(files))
	}
	return fileFromFD(files[0], "netns-socket")
}

// SetSysctl writes a net.* sysctl inside the namespace, e.g.
// SetSysctl("net.ipv4.tcp_retries2", "3"). The host is never affected.
func (ns *Namespace) SetSysctl(name, value string) error {
	if _, err := sysctlPath(name); err != nil {
		return err
	}
	_, _, err := ns.call(context.Background(), request{Op: opSysctlSet, Name: name, Value: value})
	return err
}

// Sysctl reads a net.* sysctl inside the namespace.
func (ns *Namespace) Sysctl(name string) (string, error) {
	if _, err := sysctlPath(name); err != nil {
		return "", err
	}
	resp, _, err := ns.call(context.Background(), request{Op: opSysctlGet, Name: name})
	return resp.Value, err
}

// Done is closed when the agent has exited, after Close or unexpectedly.
func (ns *Namespace) Done() <-chan struct{} { return ns.done }

// Err returns nil while the agent runs, an error wrapping ErrClosed after
// Close, and one wrapping ErrAgentDied if the agent exited on its own.
func (ns *Namespace) Err() error {
	select {
	case <-ns.done:
	default:
		return nil
	}
	select {
	case <-ns.closing:
		return fmt.Errorf("namespace: %w", ErrClosed)
	default:
		return ns.agentDied()
	}
}

// Wait blocks until the agent exits and returns Err.
func (ns *Namespace) Wait() error {
	<-ns.done
	return ns.Err()
}

// Close kills and reaps the agent and closes the TUN device and the control
// socket. It is idempotent and safe to call concurrently with other
// methods, which then fail with ErrClosed.
func (ns *Namespace) Close() error {
	ns.closeOnce.Do(func() {
		close(ns.closing)
		ns.conn.Close()
		ns.cmd.Process.Kill()
		<-ns.done
		ns.mu.Lock()
		if ns.dev != nil {
			ns.dev.Close()
		}
		ns.mu.Unlock()
	})
	return nil
}
