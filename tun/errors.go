package tun

import (
	"errors"
	"fmt"
)

// Sentinel errors for the failures a caller may want to tell apart with
// errors.Is. The errors actually returned carry a one-line message naming
// the cause and the fix; these only classify them.
var (
	// ErrNoTunDevice means /dev/net/tun is missing or its driver is not
	// loaded.
	ErrNoTunDevice = errors.New("tun: /dev/net/tun is missing")
	// ErrPermission means the process may not open /dev/net/tun, lacks
	// CAP_NET_ADMIN, or may not create the namespaces it needs.
	ErrPermission = errors.New("tun: permission denied")
	// ErrExists means an interface with the requested name already exists.
	ErrExists = errors.New("tun: interface already exists")
	// ErrNotFound means the interface to attach to does not exist.
	ErrNotFound = errors.New("tun: interface not found")
	// ErrAgentDied means a Namespace's helper process exited before Close.
	ErrAgentDied = errors.New("tun: namespace agent died")
	// ErrUnsupported means TUN devices and namespaces are not available on
	// this operating system.
	ErrUnsupported = errors.New("tun: TUN devices need Linux")
)

// userError is a one-line, user-facing message that still matches a
// sentinel (kind) and the underlying cause (often a syscall.Errno) with
// errors.Is.
type userError struct {
	msg  string
	kind error
	err  error
}

func (e *userError) Error() string { return e.msg }

// Unwrap exposes both the sentinel and the cause to errors.Is and errors.As.
func (e *userError) Unwrap() []error {
	errs := make([]error, 0, 2)
	for _, err := range []error{e.kind, e.err} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// newUserError builds a userError; format must describe cause and fix.
func newUserError(kind, cause error, format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...), kind: kind, err: cause}
}

// errNoTunDevice reports a missing /dev/net/tun node or tun driver.
func errNoTunDevice(cause error) error {
	return newUserError(ErrNoTunDevice, cause,
		"open /dev/net/tun: %v: load the tun module (modprobe tun), create the node "+
			"(mkdir -p /dev/net && mknod -m 0666 /dev/net/tun c 10 200), or in a container pass it with --device /dev/net/tun",
		cause)
}

// errTunAccess reports that /dev/net/tun exists but cannot be opened. The
// node is there, so --device is not the fix; and inside a user namespace
// (a rootless container) root does not help with a node owned by a host
// uid the namespace does not map.
func errTunAccess(cause error, uid int) error {
	fix := "make it accessible (chmod 0666 /dev/net/tun, the default on most distros; in a container, " +
		"pass a 0666 node: --device DIR/tun:/dev/net/tun), or run as root"
	if inUserns() {
		fix = "its owner is outside this user namespace, so no user here may open it: make the node 0666 on the host, " +
			"or pass one that is (mknod -m 0666 DIR/tun c 10 200; --device DIR/tun:/dev/net/tun)"
	} else if uid == 0 {
		fix = "uid 0 without CAP_DAC_OVERRIDE: make it accessible (chmod 0666 /dev/net/tun, or pass a 0666 node with --device)"
	}
	return newUserError(ErrPermission, cause,
		"open /dev/net/tun: %v: uid %d may not read and write it; %s", cause, uid, fix)
}

// errNoNetAdmin reports that creating a TUN device needs CAP_NET_ADMIN.
func errNoNetAdmin(cause error, name string) error {
	return newUserError(ErrPermission, cause,
		"create tun %q: %v: CAP_NET_ADMIN is missing; use --attach NAME with a persistent TUN an admin made "+
			"(ip tuntap add NAME mode tun user UID), or unplug run/unplug exec (private user namespace), "+
			"or in a container add --cap-add NET_ADMIN (Docker gives it to uid 0 only: also --user 0) (docs/containers.md)",
		name, cause)
}

// errExists reports that the interface name Create was given is taken.
func errExists(name string) error {
	return newUserError(ErrExists, nil,
		"create tun: interface %q already exists: pick another name with --tun NAME, or use --attach %s to use it",
		name, name)
}

// errNotFound reports that the interface Attach was given does not exist.
func errNotFound(name string) error {
	return newUserError(ErrNotFound, nil,
		"attach tun: interface %q does not exist: create it with ip tuntap add %s mode tun user $USER "+
			"(then add addresses and bring it up), or drop --attach to let unplug create one",
		name, name)
}
