package control

import (
	"os"
	"path/filepath"
	"strconv"
)

// DefaultPath returns the control socket path used when --control is not
// given, so `unplug serve` and `unplug fault` run by the same user meet
// without configuration:
//
//   - $XDG_RUNTIME_DIR/unplug/control.sock when XDG_RUNTIME_DIR is set (a
//     per-user, 0700, tmpfs directory on systemd systems);
//   - /run/unplug/control.sock when running as root;
//   - otherwise $TMPDIR/unplug-UID/control.sock (os.TempDir), per uid so
//     users do not collide.
//
// A server started with sudo (root, usually without XDG_RUNTIME_DIR) is
// therefore found by clients also run with sudo.
func DefaultPath() string {
	return defaultPath(os.Getenv, os.Geteuid(), os.TempDir())
}

// defaultPath is DefaultPath with its inputs made explicit for tests.
func defaultPath(getenv func(string) string, euid int, tmp string) string {
	if d := getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "unplug", "control.sock")
	}
	if euid == 0 {
		return "/run/unplug/control.sock"
	}
	return filepath.Join(tmp, "unplug-"+strconv.Itoa(euid), "control.sock")
}
