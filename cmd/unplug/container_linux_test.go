package main

import (
	"bufio"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The container recipes of docs/containers.md, tested without Docker: the
// unplug binary runs as uid 65534 with exactly what a recipe grants (a
// capability, an accessible /dev/net/tun, a persistent TUN it owns), in a
// scratch-like root holding nothing but the binary. Everything happens in
// private mount and network namespaces that a root "stage" process of the
// test makes for itself; the host's /dev/net/tun is never changed.

// nobody is the unprivileged user the container tests run unplug as.
const nobody = 65534

// stageEnv names the stage of a multi-process test a re-executed test
// binary is.
const stageEnv = "UNPLUG_CMD_TEST_STAGE"

// tunNone asks newRootfs for a root without /dev/net/tun (no --device).
const tunNone os.FileMode = 1 << 31

func inStage(stage string) bool { return os.Getenv(stageEnv) == stage }

// runStage re-executes the test binary to run only the current test as
// stage with attr (namespaces, credentials), and fails unless it passed.
func runStage(t *testing.T, stage string, attr *syscall.SysProcAttr) {
	t.Helper()
	unplugBinary(t) // build once, here; the stage inherits the path
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), stageEnv+"="+stage, "GORACE=atexit_sleep_ms=0")
	cmd.SysProcAttr = attr
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("stage %s: %v\n%s", stage, err, out)
	}
	t.Logf("stage %s:\n%s", stage, out)
}

// privateNamespaces is the stage's sandbox: its own mounts and network.
func privateNamespaces() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
}

// asNobody runs a process as 65534 with no groups, the given ambient
// capabilities and, if root is set, chrooted there.
func asNobody(root string, caps ...uintptr) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Chroot:      root,
		Credential:  &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}},
		AmbientCaps: caps,
		Pdeathsig:   syscall.SIGKILL,
	}
}

// imageEnv is the environment of the image: nothing but what the
// Dockerfile sets.
var imageEnv = []string{"PATH=/"}

// newRootfs builds what `docker run` would give the image: a tmpfs root
// holding /unplug, /tmp (1777), /proc and /dev/null, plus /dev/net/tun with
// the given mode unless tunMode is tunNone. Must run in a private mount
// namespace.
func newRootfs(t *testing.T, tunMode os.FileMode) string {
	t.Helper()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("rootfs: %s: %v", what, err)
		}
	}
	root, err := os.MkdirTemp("", "unplug-rootfs-")
	must("mkdir", err)
	must("mount tmpfs", unix.Mount("tmpfs", root, "tmpfs", 0, "mode=0755"))
	t.Cleanup(func() {
		unix.Unmount(filepath.Join(root, "proc"), unix.MNT_DETACH)
		unix.Unmount(root, unix.MNT_DETACH)
		os.Remove(root)
	})
	must("copy binary", copyFile(unplugBinary(t), filepath.Join(root, "unplug"), 0o755))
	must("mkdir /tmp", os.Mkdir(filepath.Join(root, "tmp"), 0o777))
	must("chmod /tmp", os.Chmod(filepath.Join(root, "tmp"), 0o1777))
	must("mkdir /proc", os.Mkdir(filepath.Join(root, "proc"), 0o555))
	must("mount /proc", unix.Mount("proc", filepath.Join(root, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""))
	must("mkdir /dev/net", os.MkdirAll(filepath.Join(root, "dev", "net"), 0o755))
	must("mknod /dev/null", mknod(filepath.Join(root, "dev", "null"), 0o666, 1, 3))
	if tunMode != tunNone {
		must("mknod /dev/net/tun", mknod(filepath.Join(root, "dev", "net", "tun"), tunMode, 10, 200))
	}
	return root
}

// mknod makes a character device node with exactly mode (umask aside).
func mknod(path string, mode os.FileMode, major, minor uint32) error {
	if err := unix.Mknod(path, unix.S_IFCHR|0o600, int(unix.Mkdev(major, minor))); err != nil {
		return err
	}
	return os.Chmod(path, mode)
}

// mountTunOver bind-mounts a fresh tun node with mode over /dev/net/tun in
// this (private) mount namespace until the test ends.
func mountTunOver(t *testing.T, mode os.FileMode) {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatal(err)
	}
	node := filepath.Join(dir, "tun")
	if err := mknod(node, mode, 10, 200); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(node, "/dev/net/tun", "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Unmount("/dev/net/tun", 0)
		unix.Unmount(dir, unix.MNT_DETACH)
	})
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// ipCmd runs ip(8) as root in the stage's namespace.
func ipCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// persistentTUN does what an administrator does for the --attach recipe:
// a persistent TUN owned by uid, addressed and up.
func persistentTUN(t *testing.T, name string, uid int) {
	t.Helper()
	ipCmd(t, "tuntap", "add", name, "mode", "tun", "user", strconv.Itoa(uid))
	t.Cleanup(func() { exec.Command("ip", "link", "del", name).Run() })
	ipCmd(t, "addr", "add", "198.18.0.1/24", "dev", name)
	ipCmd(t, "-6", "addr", "add", "fd00:198:18::1/64", "dev", name, "nodad")
	ipCmd(t, "link", "set", name, "up")
}

func TestContainerRecipes(t *testing.T) {
	if !inStage("container") {
		requireRoot(t)
		runStage(t, "container", privateNamespaces())
		return
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		t.Fatalf("make mounts private: %v", err)
	}
	t.Run("cap-add", testCapAddRecipe)
	t.Run("attach", testAttachRecipe)
	t.Run("rootless", testRootlessRecipe)
}

// testCapAddRecipe: `--cap-add NET_ADMIN --device /dev/net/tun` with the
// image's non-root user (Podman makes an added capability ambient for a
// non-root user; Docker needs --user 0, see docs/containers.md).
func testCapAddRecipe(t *testing.T) {
	t.Run("works", func(t *testing.T) {
		root := newRootfs(t, 0o666)
		p := startProc(t, procSpec{argv: []string{"/unplug", "serve"}, attr: asNobody(root, unix.CAP_NET_ADMIN), env: imageEnv, dir: "/"})
		p.awaitReady(t)
		checkPeerAnswers(t, "198.18.0.2:80", "[fd00:198:18::2]:80")
		// A second process of the image finds serve on the default
		// control path without any flag.
		for _, args := range [][]string{{"fault", "add", "drop port=9"}, {"status"}} {
			code, out, errOut := runSpec(t, procSpec{argv: append([]string{"/unplug"}, args...), attr: asNobody(root), env: imageEnv, dir: "/"})
			if code != 0 {
				t.Fatalf("unplug %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
			}
		}
		sock := filepath.Join(root, "tmp", "unplug-65534", "control.sock")
		checkMode(t, sock, 0o600, nobody)
		checkMode(t, filepath.Dir(sock), 0o700, nobody)
		p.signal(t, syscall.SIGTERM)
		if code := p.wait(t); code != 0 {
			t.Fatalf("serve exited %d after SIGTERM\n%s", code, p.stderr.String())
		}
		if slices.Contains(interfaceNames(t), "unplug0") {
			t.Error("unplug0 still exists after serve stopped")
		}
		checkNothingLeft(t, root)
	})
	for _, tc := range []struct {
		name    string
		caps    []uintptr
		tunMode os.FileMode
		want    []string
	}{
		{"no NET_ADMIN", nil, 0o666, []string{`create tun "unplug0"`, "CAP_NET_ADMIN is missing", "--cap-add NET_ADMIN", "--user 0", "--attach NAME"}},
		{"no device", []uintptr{unix.CAP_NET_ADMIN}, tunNone, []string{"open /dev/net/tun", "no such file or directory", "--device /dev/net/tun", "modprobe tun"}},
		{"device not accessible", []uintptr{unix.CAP_NET_ADMIN}, 0o600, []string{"open /dev/net/tun", "permission denied", "uid 65534", "chmod 0666 /dev/net/tun"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := newRootfs(t, tc.tunMode)
			code, _, errOut := runSpec(t, procSpec{argv: []string{"/unplug", "serve"}, attr: asNobody(root, tc.caps...), env: imageEnv, dir: "/"})
			checkFailure(t, code, 1, errOut, tc.want)
			checkNothingLeft(t, root)
		})
	}
}

// testAttachRecipe: an administrator made a persistent TUN owned by the
// user; unplug needs no capability at all, only an accessible
// /dev/net/tun.
func testAttachRecipe(t *testing.T) {
	requireTools(t, "ip")
	persistentTUN(t, "unplug0", nobody)
	t.Run("works", func(t *testing.T) {
		root := newRootfs(t, 0o666)
		p := startProc(t, procSpec{argv: []string{"/unplug", "serve", "--attach", "unplug0"}, attr: asNobody(root), env: imageEnv, dir: "/"})
		p.awaitReady(t)
		checkPeerAnswers(t, "198.18.0.2:80", "[fd00:198:18::2]:80")
		p.signal(t, syscall.SIGINT)
		if code := p.wait(t); code != 0 {
			t.Fatalf("serve exited %d after SIGINT\n%s", code, p.stderr.String())
		}
		// The device is the administrator's: it stays, unchanged.
		link := ipCmd(t, "-d", "-o", "link", "show", "unplug0")
		containsAll(t, "ip link", link, "persist on", "user nobody")
		addrs := ipCmd(t, "-o", "addr", "show", "unplug0")
		if n := strings.Count(addrs, "\n"); n != 3 { // 198.18.0.1, fd00:198:18::1, link-local
			t.Errorf("attach changed the addresses:\n%s", addrs)
		}
		checkNothingLeft(t, root)
	})
	ipCmd(t, "tuntap", "add", "unplug1", "mode", "tun", "user", "1000")
	t.Cleanup(func() { exec.Command("ip", "link", "del", "unplug1").Run() })
	for _, tc := range []struct {
		name    string
		dev     string
		tunMode os.FileMode
		want    []string
	}{
		{"missing device", "unplug9", 0o666, []string{`"unplug9" does not exist`, "ip tuntap add unplug9 mode tun user"}},
		{"owned by another user", "unplug1", 0o666, []string{`"unplug1" belongs to another user`, "owner 1000", "ip tuntap add unplug1 mode tun user"}},
		{"device not accessible", "unplug0", 0o600, []string{"open /dev/net/tun", "uid 65534", "chmod 0666 /dev/net/tun"}},
		{"no device", "unplug0", tunNone, []string{"open /dev/net/tun", "--device /dev/net/tun"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := newRootfs(t, tc.tunMode)
			code, _, errOut := runSpec(t, procSpec{argv: []string{"/unplug", "serve", "--attach", tc.dev}, attr: asNobody(root), env: imageEnv, dir: "/"})
			checkFailure(t, code, 1, errOut, tc.want)
			checkNothingLeft(t, root)
		})
	}
}

// testRootlessRecipe: unplug exec in a private user and network namespace,
// as a user without any capability; it needs an accessible /dev/net/tun
// and unprivileged user namespaces. (Not chrooted: the kernel refuses a
// user namespace to a chrooted process; containers use pivot_root.)
func testRootlessRecipe(t *testing.T) {
	bin := unplugBinary(t)
	work, err := os.MkdirTemp("", "unplug-home-") // t.TempDir's parent is private to root
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	if err := os.Chown(work, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	argv := []string{bin, "exec", "--", "true"}
	if _, err := exec.LookPath("curl"); err == nil {
		argv = []string{bin, "exec", "--", "curl", "-sf", "-o", "/dev/null", "-w", "%{http_code}", "http://198.18.0.2/bytes/10"}
	}
	t.Run("works", func(t *testing.T) {
		mountTunOver(t, 0o666)
		code, out, errOut := runSpec(t, procSpec{argv: argv, attr: asNobody(""), env: []string{"PATH=/usr/bin:/bin", "HOME=" + work}, dir: work})
		if notWired(errOut) {
			t.Skip("unplug exec is not implemented yet")
		}
		if code != 0 {
			t.Fatalf("%s: exit %d\n%s%s", strings.Join(argv, " "), code, out, errOut)
		}
	})
	t.Run("device not accessible", func(t *testing.T) {
		mountTunOver(t, 0o600)
		code, _, errOut := runSpec(t, procSpec{argv: argv, attr: asNobody(""), env: []string{"PATH=/usr/bin:/bin", "HOME=" + work}, dir: work})
		if notWired(errOut) {
			t.Skip("unplug exec is not implemented yet")
		}
		checkFailure(t, code, 1, errOut, []string{"/dev/net/tun", "uid 65534", "chmod 0666"})
	})
}

// checkPeerAnswers fetches a missing page from each address and expects
// the peer's 404.
func checkPeerAnswers(t *testing.T, addrs ...string) {
	t.Helper()
	for _, a := range addrs {
		c := dialInNetns(t, os.Getpid(), a)
		if reply := httpGet(t, c, "/404"); !strings.HasPrefix(reply, "HTTP/1.0 404 File not found") {
			t.Errorf("GET /404 from %s: %q", a, reply)
		}
	}
}

// checkFailure expects exit code want and a single stderr line naming
// every one of subs.
func checkFailure(t *testing.T, code, want int, stderr string, subs []string) {
	t.Helper()
	if code != want {
		t.Errorf("exit %d, want %d; stderr:\n%s", code, want, stderr)
	}
	oneLine(t, "stderr", stderr)
	containsAll(t, "error", stderr, subs...)
}

// checkNothingLeft: after serve ended, no unplug0 unless an administrator
// made it, and nothing in the image's /tmp.
func checkNothingLeft(t *testing.T, root string) {
	t.Helper()
	left, _ := os.ReadDir(filepath.Join(root, "tmp"))
	for _, e := range left {
		t.Errorf("left behind in /tmp: %s", e.Name())
	}
	for _, name := range interfaceNames(t) {
		if name != "lo" && name != "unplug0" && name != "unplug1" {
			t.Errorf("interface %s left behind", name)
		}
	}
}

// checkMode checks a file's permission bits and owner.
func checkMode(t *testing.T, path string, mode os.FileMode, uid int) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	if got := os.FileMode(st.Mode & 0o7777); got != mode || int(st.Uid) != uid {
		t.Errorf("%s: mode %v uid %d, want %v uid %d", path, got, st.Uid, mode, uid)
	}
}

// TestDockerfile checks the image recipe without Docker: a static
// CGO_ENABLED=0 build, a final stage from scratch (or distroless) holding
// only the binary, and a non-root USER. The binary the tests run is built
// the same way; it must need no dynamic loader.
func TestDockerfile(t *testing.T) {
	f, err := os.Open("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages []string // FROM line of each stage
	var final []string  // instructions of the last stage
	build := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		word, _, _ := strings.Cut(line, " ")
		switch strings.ToUpper(word) {
		case "FROM":
			stages = append(stages, line)
			final = nil
		case "RUN":
			if strings.Contains(line, "go build") {
				build = line
			}
		}
		final = append(final, line)
	}
	if len(stages) < 2 {
		t.Fatalf("want a build stage and a final stage, got %q", stages)
	}
	last := strings.Fields(stages[len(stages)-1])
	if base := last[1]; base != "scratch" && !strings.Contains(base, "distroless") {
		t.Errorf("final stage is FROM %s, want scratch or distroless", base)
	}
	if !strings.Contains(build, "CGO_ENABLED=0") || !strings.Contains(build, "./cmd/unplug") {
		t.Errorf("build step %q is not a static CGO_ENABLED=0 build of ./cmd/unplug", build)
	}
	user := ""
	copies := 0
	for _, l := range final {
		word, rest, _ := strings.Cut(l, " ")
		switch strings.ToUpper(word) {
		case "USER":
			user = strings.TrimSpace(rest)
		case "RUN":
			t.Errorf("final stage runs %q; it must hold only the binary", l)
		case "COPY":
			copies++
		}
	}
	if uid, _, _ := strings.Cut(user, ":"); uid == "" || uid == "0" || uid == "root" {
		t.Errorf("final stage USER is %q, want a non-root user", user)
	}
	if copies == 0 {
		t.Error("final stage copies nothing")
	}

	exe, err := elf.Open(unplugBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	defer exe.Close()
	for _, p := range exe.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary needs a dynamic loader (PT_INTERP); it would not start FROM scratch")
		}
	}
	if libs, _ := exe.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary links %v; it would not start FROM scratch", libs)
	}
}
