package tun

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// nobody is the unprivileged user the rootless tests run as.
const nobody = 65534

// The rootless tests run in three processes:
//
//  1. the normal test run (root) copies the test binary somewhere nobody
//     can execute it and starts stage 2;
//  2. a root process in a private mount (and network) namespace bind-mounts
//     its own /dev/net/tun node over the real one, never changing the
//     host's, and starts stage 3;
//  3. the test proper, as uid 65534.

func TestRootlessNamespace(t *testing.T) {
	switch {
	case inStage("rootless"):
		checkRootlessNamespace(t)
	case inStage("mountns-open"):
		mountTunNode(t, 0o666)
		runStage(t, "rootless", "", ".", nobodyAttr())
	default:
		requireRoot(t)
		dir, exe := copyTestBinary(t)
		runStage(t, "mountns-open", exe, dir, mountnsAttr())
	}
}

func TestRootlessPreconditions(t *testing.T) {
	switch {
	case inStage("rootless-denied"):
		checkRootlessDenied(t)
	case inStage("mountns-closed"):
		mountTunNode(t, 0o600)
		runStage(t, "rootless-denied", "", ".", nobodyAttr())
	default:
		requireRoot(t)
		dir, exe := copyTestBinary(t)
		runStage(t, "mountns-closed", exe, dir, mountnsAttr())
	}
}

// checkRootlessNamespace: as nobody, with an accessible /dev/net/tun, a
// namespace works end to end and programs run as the caller's uid.
func checkRootlessNamespace(t *testing.T) {
	if os.Geteuid() != nobody {
		t.Fatalf("euid %d, want %d", os.Geteuid(), nobody)
	}
	// Here (a namespace this user does not own) CAP_NET_ADMIN is missing.
	if dev, err := Create(DefaultConfig()); err == nil {
		dev.Close()
		t.Fatal("Create without CAP_NET_ADMIN succeeded")
	} else if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "CAP_NET_ADMIN") {
		t.Fatalf("Create = %v, want ErrPermission naming CAP_NET_ADMIN", err)
	}
	ns := newTestNamespace(t, NamespaceConfig{
		TUN:     DefaultConfig(),
		Sysctls: map[string]string{"net.ipv4.tcp_retries2": "4"},
	})
	sendUDPAndCapture(t, ns, "udp4", host4, peer4)
	sendUDPAndCapture(t, ns, "udp6", host6, peer6)
	if got, err := ns.Sysctl("net.ipv4.tcp_retries2"); err != nil || got != "4" {
		t.Fatalf("Sysctl = %q, %v; want 4", got, err)
	}
	if id := strings.TrimSpace(runOutput(t, ns, "id", "-u")); id != "65534" {
		t.Fatalf("program runs as uid %s, want 65534", id)
	}
}

// checkRootlessDenied: as nobody, with /dev/net/tun mode 0600, the error
// names the device and the fix, before any process is started.
func checkRootlessDenied(t *testing.T) {
	if os.Geteuid() != nobody {
		t.Fatalf("euid %d, want %d", os.Geteuid(), nobody)
	}
	before := childPIDs(t)
	ns, err := NewNamespace(context.Background(), NamespaceConfig{TUN: DefaultConfig()})
	if err == nil {
		ns.Close()
		t.Fatal("NewNamespace succeeded without access to /dev/net/tun")
	}
	msg := err.Error()
	if !errors.Is(err, ErrPermission) || strings.Contains(msg, "\n") ||
		!strings.Contains(msg, "/dev/net/tun") || !strings.Contains(msg, "uid 65534") || !strings.Contains(msg, "chmod 0666") {
		t.Fatalf("err = %q, want a one-line ErrPermission about /dev/net/tun for uid 65534 and its fix", msg)
	}
	if len(childPIDs(t)) != len(before) {
		t.Fatal("an agent was started although a precondition failed")
	}
}

// mountTunNode makes this (private) mount namespace's /dev/net/tun a fresh
// node with the given mode on a tmpfs under the working directory.
func mountTunNode(t *testing.T, mode os.FileMode) {
	must := func(what string, err error) {
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	must("make mounts private", unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""))
	dir, err := filepath.Abs("dev")
	must("abs", err)
	must("mkdir", os.Mkdir(dir, 0o755))
	must("mount tmpfs", unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755"))
	node := filepath.Join(dir, "tun")
	must("mknod", unix.Mknod(node, unix.S_IFCHR|0o600, int(unix.Mkdev(10, 200))))
	must("chmod own node", os.Chmod(node, mode))
	must("bind over "+tunPath, unix.Mount(node, tunPath, "", unix.MS_BIND, ""))
}

// copyTestBinary copies this test binary into a directory uid 65534 may
// enter (go test's build directory is private to root).
func copyTestBinary(t *testing.T) (dir, exe string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "unplug-tun-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	exe = filepath.Join(dir, "tun.test")
	dst, err := os.OpenFile(exe, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return dir, exe
}

// mountnsAttr runs a stage as root in private mount and network
// namespaces, so nothing it mounts or creates reaches the host.
func mountnsAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWNET,
		Pdeathsig:  syscall.SIGKILL,
	}
}

// nobodyAttr runs a stage as uid and gid 65534 without supplementary
// groups.
func nobodyAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}},
		Pdeathsig:  syscall.SIGKILL,
	}
}
