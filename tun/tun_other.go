//go:build !linux

package tun

import (
	"context"
	"io"
	"net"
	"os"
	"runtime"
)

// errNeedLinux is returned by everything that needs a TUN device.
func errNeedLinux(op string) error {
	return newUserError(ErrUnsupported, nil,
		"%s: TUN devices need Linux (this is %s): run unplug on Linux, e.g. in a VM or a container with --cap-add NET_ADMIN --device /dev/net/tun",
		op, runtime.GOOS)
}

// Create creates a TUN device; on this OS it always fails with
// ErrUnsupported.
func Create(cfg Config) (Device, error) { return nil, errNeedLinux("create tun") }

// Attach opens an existing persistent TUN device; on this OS it always
// fails with ErrUnsupported.
func Attach(name string, mtu int) (Device, error) { return nil, errNeedLinux("attach tun") }

// RunAgentIfRequested does nothing on this OS: there are no namespace
// agents.
func RunAgentIfRequested() {}

// Namespace is a private network namespace; on this OS none can be made.
type Namespace struct{}

// NewNamespace builds a private network namespace; on this OS it always
// fails with ErrUnsupported.
func NewNamespace(ctx context.Context, cfg NamespaceConfig) (*Namespace, error) {
	return nil, errNeedLinux("create network namespace")
}

// Device returns the namespace's TUN device (nil on this OS).
func (ns *Namespace) Device() Device { return nil }

// PID returns the agent's process id (0 on this OS).
func (ns *Namespace) PID() int { return 0 }

// Socket creates a socket inside the namespace; unsupported on this OS.
func (ns *Namespace) Socket(domain, typ, proto int) (*os.File, error) {
	return nil, errNeedLinux("namespace socket")
}

// Dial connects from inside the namespace; unsupported on this OS.
func (ns *Namespace) Dial(ctx context.Context, network, address string, control func(fd uintptr) error) (net.Conn, error) {
	return nil, errNeedLinux("namespace dial")
}

// SetSysctl writes a sysctl inside the namespace; unsupported on this OS.
func (ns *Namespace) SetSysctl(name, value string) error { return errNeedLinux("namespace sysctl") }

// Sysctl reads a sysctl inside the namespace; unsupported on this OS.
func (ns *Namespace) Sysctl(name string) (string, error) { return "", errNeedLinux("namespace sysctl") }

// Run runs a program inside the namespace; unsupported on this OS.
func (ns *Namespace) Run(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, argv []string) (int, error) {
	return -1, errNeedLinux("namespace run")
}

// Done is closed when the agent has exited; on this OS, at once.
func (ns *Namespace) Done() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// Err reports why the namespace is gone; on this OS it never existed.
func (ns *Namespace) Err() error { return errNeedLinux("namespace") }

// Wait returns Err.
func (ns *Namespace) Wait() error { return ns.Err() }

// Close does nothing on this OS.
func (ns *Namespace) Close() error { return nil }

// inUserns reports whether this process is in a non-initial user
// namespace; only Linux has them.
func inUserns() bool { return false }

// IPv6Off reports whether new interfaces get no IPv6; there are none to
// create on this OS.
func IPv6Off() (why string, off bool) { return "", false }
