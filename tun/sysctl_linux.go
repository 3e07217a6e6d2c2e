package tun

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// sysctlPath maps a sysctl name to its file under /proc/sys. Both dotted
// ("net.ipv4.tcp_retries2") and slashed ("net/ipv4/conf/eth0.1/rp_filter")
// forms are accepted, as sysctl(8) does. Only net.* names are allowed: they
// are per network namespace, so writing them inside one never reaches the
// host.
func sysctlPath(name string) (string, error) {
	rel := name
	if !strings.Contains(name, "/") {
		rel = strings.ReplaceAll(name, ".", "/")
	}
	parts := strings.Split(rel, "/")
	if len(parts) < 2 || parts[0] != "net" {
		return "", fmt.Errorf("sysctl %q: only net.* sysctls are per network namespace", name)
	}
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return "", fmt.Errorf("sysctl %q: malformed name", name)
		}
	}
	return filepath.Join("/proc/sys", rel), nil
}

// writeSysctl sets a sysctl of the calling process's network namespace.
func writeSysctl(name, value string) error {
	path, err := sysctlPath(name)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return sysctlError(name, err)
	}
	_, werr := f.WriteString(value)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("set sysctl %s=%q: %w", name, value, err)
	}
	return nil
}

// readSysctl reads a sysctl of the calling process's network namespace,
// without the trailing newline.
func readSysctl(name string) (string, error) {
	path, err := sysctlPath(name)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", sysctlError(name, err)
	}
	return strings.TrimSuffix(string(b), "\n"), nil
}

// sysctlError explains the common failures. A container mounts /proc/sys
// read-only even for a network namespace unplug made itself; the engines
// can unmask it for one container.
func sysctlError(name string, err error) error {
	switch {
	case errors.Is(err, unix.EROFS):
		return fmt.Errorf("sysctl %s: /proc/sys is read-only, as containers mount it: run the container with "+
			"--security-opt unmask=/proc/sys (podman) or --security-opt systempaths=unconfined (docker); "+
			"unplug writes only its private namespace's net.* sysctls: %w", name, err)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("sysctl %s: no such sysctl in a network namespace on this kernel: %w", name, err)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return fmt.Errorf("sysctl %s: permission denied (needs CAP_NET_ADMIN in the namespace): %w", name, err)
	default:
		return fmt.Errorf("sysctl %s: %w", name, err)
	}
}

// applySysctls writes the sysctls that do not name device dev before it
// exists (so net.ipv6.conf.default.* reaches it) and returns the others.
func applySysctls(sysctls map[string]string, dev string) (deferred map[string]string, err error) {
	deferred = make(map[string]string)
	for name, value := range sysctls {
		if namesDevice(name, dev) {
			deferred[name] = value
			continue
		}
		if err := writeSysctl(name, value); err != nil {
			return nil, err
		}
	}
	return deferred, nil
}

// namesDevice reports whether a sysctl is one of dev's per-device knobs
// (net.ipv4.conf.DEV.x, net.ipv6.conf.DEV.x, net.ipv4.neigh.DEV.x, ...).
func namesDevice(name, dev string) bool {
	if dev == "" {
		return false
	}
	sep := "."
	if strings.Contains(name, "/") {
		sep = "/"
	}
	parts := strings.Split(name, sep)
	return len(parts) >= 5 && parts[3] == dev
}

// IPv6Off reports whether interfaces created now in the calling process's
// network namespace get no IPv6: net.ipv6.conf.default.disable_ipv6 is 1
// (Docker sets it in a container whose network has no IPv6, --network none
// included) or the kernel has no IPv6. why says which, for a one-line note;
// a caller then configures IPv4 only instead of failing on the IPv6 address.
func IPv6Off() (why string, off bool) {
	v, err := readSysctl("net.ipv6.conf.default.disable_ipv6")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "the kernel has no IPv6 (/proc/sys/net/ipv6 is missing)", true
	case err == nil && v == "1":
		return "IPv6 is disabled in this network namespace (net.ipv6.conf.default.disable_ipv6=1)", true
	}
	return "", false
}
