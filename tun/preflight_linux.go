package tun

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Kernel switches that can forbid unprivileged user namespaces.
const (
	sysctlUsernsClone    = "/proc/sys/kernel/unprivileged_userns_clone"             // Debian, older Ubuntu
	sysctlMaxUserns      = "/proc/sys/user/max_user_namespaces"                     // all kernels
	sysctlAppArmorUserns = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns" // Ubuntu >= 23.10
)

// checkRootless verifies, before anything is started, the preconditions of
// an unprivileged namespace: user namespaces are allowed and /dev/net/tun
// exists and is readable and writable by this user. Each failure names the
// precondition and the fix.
func checkRootless() error {
	if readProcValue(sysctlUsernsClone) == "0" {
		return usernsDisabled("kernel.unprivileged_userns_clone is 0", "sysctl -w kernel.unprivileged_userns_clone=1")
	}
	if readProcValue(sysctlMaxUserns) == "0" {
		return usernsDisabled("user.max_user_namespaces is 0", "sysctl -w user.max_user_namespaces=10000")
	}
	err := unix.Faccessat(unix.AT_FDCWD, tunPath, unix.R_OK|unix.W_OK, unix.AT_EACCESS)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENOENT):
		return errNoTunDevice(err)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return errTunAccess(err, os.Geteuid())
	default:
		return fmt.Errorf("check %s: %w", tunPath, err)
	}
}

// usernsDisabled reports that the kernel forbids unprivileged user
// namespaces.
func usernsDisabled(why, fix string) error {
	return newUserError(ErrPermission, unix.EPERM,
		"create user namespace: %s: enable it (%s), %s", why, fix, otherPaths(true))
}

// cloneError explains why starting the namespace agent failed.
func cloneError(err error, rootless bool) error {
	switch {
	case errors.Is(err, unix.ENOSYS):
		// Go starts the agent with clone(2); a kernel without user or network
		// namespaces says EINVAL, so ENOSYS comes from a seccomp filter.
		return newUserError(ErrPermission, err,
			"create namespaces: %v: a seccomp filter refuses clone with namespace flags; allow it "+
				"(podman or docker: --security-opt seccomp=unconfined, or a profile that permits clone and unshare), %s",
			err, otherPaths(false))
	case !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.ENOSPC):
		return fmt.Errorf("start namespace agent: %w", err)
	case !rootless:
		return newUserError(ErrPermission, err,
			"create network namespace: %v: refused although this process has CAP_SYS_ADMIN "+
				"(a seccomp profile or security module forbids it: podman or docker: --security-opt seccomp=unconfined), %s",
			err, otherPaths(true))
	}
	return newUserError(ErrPermission, err,
		"create user namespace: %v: %s", err, usernsHint(false))
}

// usernsHint names the likely reason a rootless namespace failed when none
// of the sysctls checkRootless reads forbids it. created tells whether the
// user namespace itself was made (and then granted no capabilities).
func usernsHint(created bool) string {
	switch {
	case readProcValue(sysctlAppArmorUserns) == "1":
		return "AppArmor restricts unprivileged user namespaces (sysctl -w kernel.apparmor_restrict_unprivileged_userns=0), " + otherPaths(true)
	case created:
		return "a security module (AppArmor, SELinux) denies capabilities in user namespaces: allow it for unplug, " + otherPaths(true)
	default:
		return "a seccomp profile or container runtime forbids user namespaces " +
			"(podman or docker: --security-opt seccomp=unconfined), " + otherPaths(false)
	}
}

// otherPaths names what works without the namespaces that just failed.
// "Run as root" is offered only where it may help (rootHelps): not to uid
// 0, and not inside a user namespace (a container's root is no root on the
// host); a seccomp filter, for one, refuses root's clone just the same.
func otherPaths(rootHelps bool) string {
	if !rootHelps || os.Geteuid() == 0 || inUserns() {
		return "or use serve --attach NAME with a persistent TUN (docs/containers.md)"
	}
	return "or run unplug as root, or use serve --attach NAME with a persistent TUN (docs/containers.md)"
}

// readProcValue reads a /proc file; missing or unreadable yields "".
func readProcValue(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
