package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The container recipes of docs/containers.md with a real engine: Podman,
// rootful and rootless, runs the image built from the Dockerfile's final
// stage. Every container gets --network none or --network container:NAME
// (a bridge would change the host's firewall); the TUN devices live in the
// containers' network namespaces and go away with them. docs/containers.md
// shows the commands this test runs.
//
//	go test -count=1 -run TestPodman -v ./cmd/unplug    (as root)

// podTestUser is the user rootless Podman runs as; the test creates it
// (with subordinate uid and gid ranges) and removes it again. The name is
// this process's own, so that concurrent runs do not share it.
var podTestUser = fmt.Sprintf("unplug-test-%d", os.Getpid())

// podEngine is one way to run podman: rootful, or rootless as podTestUser.
type podEngine struct {
	name   string
	prefix []string // argv up to and including podman's global flags
	run    []string // flags every `podman run` needs here (ulimits)
	dir    string   // working directory for podman
	uidMap string   // rootless: podman's uid map ("" = identity)
}

// podEnv is what the subtests share: the engines and the images.
type podEnv struct {
	image   string // the unplug image (FROM scratch, binary and /tmp only)
	curl    string // an application image: curl, its libraries and /unplug
	tunNode string // an accessible (0666) tun node in a private directory
	tag     string // unique name part of this run's containers
}

func TestPodman(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (to create the rootless test user and host-side TUNs)")
	}
	for _, tool := range []string{"podman", "runc", "catatonit", "nsenter", "ip", "tshark", "runuser"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (make deps installs it): %v", tool, err)
		}
	}
	env := &podEnv{tag: fmt.Sprintf("unplug-test-%d", os.Getpid())}
	env.image, env.curl = env.tag+"-img", env.tag+"-curl"
	env.tunNode = privateTunNode(t)
	ctxDir, curlDir := imageContexts(t)

	engines := []*podEngine{{name: "rootful", prefix: []string{"podman"}, dir: "/"}}
	if e, err := rootlessEngine(t); err != nil {
		t.Errorf("rootless podman: %v", err)
	} else {
		engines = append(engines, e)
	}
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			e.build(t, env.image, ctxDir)
			e.build(t, env.curl, curlDir)
			e.detect(t, env.image)
			t.Run("image-default", func(t *testing.T) { e.testRecipeA(t, env, 65534, nil, "stop") })
			t.Run("A/uid0", func(t *testing.T) { e.testRecipeA(t, env, 0, []string{"--fault", "drop port=9"}, "kill") })
			t.Run("A/uid65534-kill9-pcap", func(t *testing.T) { e.testRecipeA(t, env, 65534, []string{"--fault", "drop port=9"}, "kill") })
			t.Run("A/ipv6-disabled", func(t *testing.T) { e.testIPv6Disabled(t, env) })
			t.Run("B/uid65534", func(t *testing.T) { e.testRecipeB(t, env, 65534) })
			t.Run("B/uid0", func(t *testing.T) { e.testRecipeB(t, env, 0) })
			t.Run("C/uid65534", func(t *testing.T) { e.testRecipeC(t, env, 65534) })
			t.Run("C/uid0", func(t *testing.T) { e.testRecipeC(t, env, 0) })
			t.Run("C/errors", func(t *testing.T) { e.testRecipeCErrors(t, env) })
		})
	}
}

// privateTunNode makes a 0666 tun node in a private directory, for
// --device NODE:/dev/net/tun: the host's own node may be 0600, and is
// never changed.
func privateTunNode(t *testing.T) string {
	dir := sharedDir(t, 0o755) // the rootless user passes it on
	node := filepath.Join(dir, "tun")
	if err := mknod(node, 0o666, 10, 200); err != nil {
		t.Fatal(err)
	}
	return node
}

// sharedDir makes a directory with mode that the rootless user (and the
// containers' uids) can reach: t.TempDir's parent is 0700.
func sharedDir(t *testing.T, mode os.FileMode) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "unplug-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	return dir
}

// imageContexts prepares the two build contexts. The unplug image is
// built from the Dockerfile's last stage, word for word but for the
// stage its COPY reads from: the static binary built here (the
// Dockerfile's golang stage needs the network) is laid out in the context
// as the build stage lays it out, out/root/unplug and a 1777 out/root/tmp.
func imageContexts(t *testing.T) (ctxDir, curlDir string) {
	bin := unplugBinary(t)
	base := sharedDir(t, 0o755)
	ctxDir, curlDir = filepath.Join(base, "unplug"), filepath.Join(base, "curl")
	root := filepath.Join(ctxDir, "out", "root")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "tmp"), 0o755))
	must(os.Chmod(filepath.Join(root, "tmp"), 0o1777))
	must(copyFile(bin, filepath.Join(root, "unplug"), 0o755))
	final, err := finalStage("../../Dockerfile")
	must(err)
	// COPY --from=build /out/root/ / becomes COPY out/root/ /: the same
	// tree copied the same way, and no intermediate image to clean up.
	must(os.WriteFile(filepath.Join(ctxDir, "Containerfile"),
		[]byte(strings.ReplaceAll(final, "COPY --from=build /out/", "COPY out/")), 0o644))

	// The application image: curl with its libraries, and /unplug copied
	// in as docs/containers.md says (COPY --from=unplug /unplug ...).
	croot := filepath.Join(curlDir, "root")
	must(os.MkdirAll(filepath.Join(croot, "tmp"), 0o755))
	must(os.Chmod(filepath.Join(croot, "tmp"), 0o1777))
	must(copyFile(bin, filepath.Join(croot, "unplug"), 0o755))
	curl, err := exec.LookPath("curl")
	must(err)
	files, err := sharedLibraries(curl)
	must(err)
	for _, f := range append(files, curl) {
		dst := filepath.Join(croot, f)
		must(os.MkdirAll(filepath.Dir(dst), 0o755))
		if err := copyFile(f, dst, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(curlDir, "Containerfile"),
		[]byte("FROM scratch\nCOPY root/ /\nUSER 65534:65534\n"), 0o644))
	must(filepath.Walk(base, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.IsDir() && fi.Mode().Perm() != 0o777 {
			err = os.Chmod(p, fi.Mode()&os.ModeSticky|0o755)
		}
		return err
	}))
	return ctxDir, curlDir
}

// finalStage returns the Dockerfile's last stage, from its FROM line on.
func finalStage(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	lines := strings.Split(string(b), "\n")
	last := -1
	for i, l := range lines {
		if strings.HasPrefix(strings.ToUpper(strings.TrimSpace(l)), "FROM ") {
			last = i
		}
	}
	if last < 0 {
		return "", fmt.Errorf("%s has no FROM", path)
	}
	return strings.Join(lines[last:], "\n"), nil
}

// sharedLibraries lists the files ldd says prog loads (the loader too).
func sharedLibraries(prog string) ([]string, error) {
	out, err := exec.Command("ldd", prog).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %v", prog, err)
	}
	var files []string
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "/") {
			files = append(files, f)
		}
	}
	return files, nil
}

// rootlessEngine creates podTestUser with subordinate ids (if missing)
// and returns an engine running podman as that user; the user, its
// storage and its processes are removed when the test ends.
func rootlessEngine(t *testing.T) (*podEngine, error) {
	for _, tool := range []string{"newuidmap", "newgidmap", "useradd", "userdel"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("needs %s (package uidmap / passwd): %v", tool, err)
		}
	}
	if _, err := user.Lookup(podTestUser); err != nil {
		if out, err := exec.Command("useradd", "--create-home", "--shell", "/usr/sbin/nologin", podTestUser).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("useradd: %v: %s", err, out)
		}
	}
	u, err := user.Lookup(podTestUser)
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	t.Cleanup(func() { removeTestUser(t, uid) })
	if !hasSubIDs("/etc/subuid", podTestUser) || !hasSubIDs("/etc/subgid", podTestUser) {
		// useradd adds them when login.defs asks for it; otherwise do it here.
		if out, err := exec.Command("usermod", "--add-subuids", "300000-365535", "--add-subgids", "300000-365535", podTestUser).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("usermod --add-subuids: %v: %s", err, out)
		}
	}
	return &podEngine{
		name: "rootless",
		prefix: []string{"runuser", "-u", podTestUser, "--", "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
			"HOME=" + u.HomeDir, "podman"},
		dir: u.HomeDir,
	}, nil
}

// hasSubIDs reports whether file (/etc/subuid, /etc/subgid) has a range
// for name.
func hasSubIDs(file, name string) bool {
	b, _ := os.ReadFile(file)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name+":") {
			return true
		}
	}
	return false
}

// removeTestUser ends what rootless podman left running as uid (its pause
// process keeps the user namespace), by PID, and deletes the user with its
// storage.
func removeTestUser(t *testing.T, uid int) {
	for _, pid := range processesOf(uid) {
		unix.Kill(pid, unix.SIGKILL)
	}
	time.Sleep(200 * time.Millisecond)
	if out, err := exec.Command("userdel", "--remove", podTestUser).CombinedOutput(); err != nil {
		t.Logf("userdel %s: %v: %s", podTestUser, err, out)
	}
	// Rootless podman's run root and its tmp when XDG_RUNTIME_DIR is unset.
	os.RemoveAll(fmt.Sprintf("/tmp/podman-run-%d", uid))
	os.RemoveAll(fmt.Sprintf("/tmp/containers-user-%d", uid))
}

// processesOf lists the processes whose real uid is uid.
func processesOf(uid int) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name(), &st) == nil && int(st.Uid) == uid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// podman runs podman with args and returns its combined output.
func (e *podEngine) podman(ctx context.Context, args ...string) (string, error) {
	argv := append(append([]string{}, e.prefix...), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = e.dir
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// must runs podman and fails the test if it fails.
func (e *podEngine) must(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := e.podman(ctx, args...)
	if err != nil {
		t.Fatalf("%s podman %s: %v\n%s", e.name, strings.Join(args, " "), err, out)
	}
	return out
}

// try runs podman with a timeout and returns output and error.
func (e *podEngine) try(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return e.podman(ctx, args...)
}

// runArgs is `run` with the flags this sandbox needs, then args.
func (e *podEngine) runArgs(args ...string) []string {
	return append(append([]string{"run"}, e.run...), args...)
}

// build builds an image from dir and removes it when the test ends.
func (e *podEngine) build(t *testing.T, name, dir string) {
	e.must(t, "build", "--quiet", "--network", "none", "-t", name, "-f", filepath.Join(dir, "Containerfile"), dir)
	t.Cleanup(func() { e.try(time.Minute, "rmi", "-f", name) })
}

// detect finds the global and run flags this machine needs: the default
// OCI runtime or cgroup manager may not work (crun, systemd), and without
// CAP_SYS_RESOURCE runc cannot raise rlimits to podman's defaults.
func (e *podEngine) detect(t *testing.T, image string) {
	globals := [][]string{nil, {"--runtime", "runc", "--cgroup-manager", "cgroupfs"}}
	runs := [][]string{nil, {"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"}}
	base := e.prefix
	var errs []string
	for _, g := range globals {
		for _, r := range runs {
			e.prefix = append(append([]string{}, base...), g...)
			e.run = r
			out, err := e.try(time.Minute, e.runArgs("--rm", "--network", "none", image, "help")...)
			if err == nil && strings.Contains(out, "usage: unplug") {
				t.Logf("%s podman works with global flags %q and run flags %q", e.name, g, r)
				if e.name == "rootless" {
					e.uidMap = e.must(t, "unshare", "cat", "/proc/self/uid_map")
				}
				return
			}
			errs = append(errs, fmt.Sprintf("%q %q: %v: %s", g, r, err, strings.TrimSpace(out)))
		}
	}
	t.Fatalf("%s podman runs no container here:\n%s", e.name, strings.Join(errs, "\n"))
}

// hostUID maps a container uid to the host's: identity for rootful
// podman (no user namespace), podman's uid map for rootless.
func (e *podEngine) hostUID(t *testing.T, uid int) int {
	t.Helper()
	if e.uidMap == "" {
		return uid
	}
	for _, l := range strings.Split(e.uidMap, "\n") {
		f := strings.Fields(l)
		if len(f) != 3 {
			continue
		}
		in, _ := strconv.Atoi(f[0])
		out, _ := strconv.Atoi(f[1])
		n, _ := strconv.Atoi(f[2])
		if uid >= in && uid < in+n {
			return out + uid - in
		}
	}
	t.Fatalf("uid %d is not in podman's uid map %q", uid, e.uidMap)
	return -1
}

// container is one running container and what must be gone after it.
type container struct {
	name, id string
	pid      int    // its init process on the host
	pidns    string // its pid namespace, as readlink /proc/PID/ns/pid
	netns    string
}

// start runs a detached container and waits until its log says ready
// (ready "" = does not wait).
func (e *podEngine) start(t *testing.T, name, ready string, args ...string) *container {
	t.Helper()
	e.try(time.Minute, "rm", "-f", name) // a leftover of an aborted run
	id := strings.TrimSpace(e.must(t, e.runArgs(append([]string{"-d", "--rm", "--name", name}, args...)...)...))
	t.Cleanup(func() { e.try(time.Minute, "rm", "-f", "-t", "0", name) })
	c := &container{name: name, id: id}
	pid, err := strconv.Atoi(strings.TrimSpace(e.must(t, "inspect", "-f", "{{.State.Pid}}", name)))
	if err != nil || pid <= 0 {
		t.Fatalf("container %s has no pid: %v", name, err)
	}
	c.pid = pid
	c.pidns, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	c.netns, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	if ready == "" {
		return c
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		logs, _ := e.try(time.Minute, "logs", name)
		if strings.Contains(logs, ready) {
			t.Logf("%s: %s", name, strings.TrimSpace(logs))
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready (%q) after 60s; logs:\n%s", name, ready, logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// end stops c with `podman stop` or kills it (`podman kill -s KILL`, a
// kill -9 of its init), then checks that nothing is left: no container,
// no process in its pid or network namespace, no conmon naming it.
func (e *podEngine) end(t *testing.T, c *container, how string) {
	t.Helper()
	switch how {
	case "stop":
		e.must(t, "stop", "-t", "10", c.name)
	case "kill":
		e.must(t, "kill", "-s", "KILL", c.name)
	default:
		t.Fatalf("end %q", how)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		left := leftovers(c)
		out, _ := e.try(time.Minute, "ps", "-a", "-q", "--filter", "id="+c.id)
		if strings.TrimSpace(out) != "" {
			left = append(left, "container "+c.name+" still exists")
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after podman %s %s: %s", how, c.name, strings.Join(left, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// leftovers lists processes still in c's namespaces or naming its id.
func leftovers(c *container) []string {
	var left []string
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		if _, err := strconv.Atoi(ent.Name()); err != nil {
			continue
		}
		p := "/proc/" + ent.Name()
		pidns, _ := os.Readlink(p + "/ns/pid")
		netns, _ := os.Readlink(p + "/ns/net")
		cmdline, _ := os.ReadFile(p + "/cmdline")
		switch {
		case c.pidns != "" && pidns == c.pidns:
			left = append(left, fmt.Sprintf("process %s in its pid namespace (%q)", ent.Name(), bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
		case c.netns != "" && netns == c.netns:
			left = append(left, fmt.Sprintf("process %s in its network namespace (%q)", ent.Name(), bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
		case bytes.Contains(cmdline, []byte(c.id)):
			left = append(left, fmt.Sprintf("process %s names it (%q)", ent.Name(), bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
		}
	}
	return left
}

// hostUIDOf returns the real uid of a process as the host sees it.
func hostUIDOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "Uid:" {
			uid, _ := strconv.Atoi(f[1])
			return uid
		}
	}
	t.Fatalf("/proc/%d/status has no Uid line", pid)
	return -1
}

// hostTuns lists the TUN/TAP devices in the host's network namespace.
func hostTuns(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show", "type", "tun").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link show type tun: %v: %s", err, out)
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(l); len(f) >= 2 {
			names = append(names, strings.TrimSuffix(f[1], ":"))
		}
	}
	return names
}

// checkNoNewHostTuns fails if the host's namespace has a TUN it did not
// have before.
func checkNoNewHostTuns(t *testing.T, before []string) {
	t.Helper()
	for _, n := range hostTuns(t) {
		found := false
		for _, b := range before {
			found = found || b == n
		}
		if !found {
			t.Errorf("a TUN %q appeared in the host's network namespace", n)
		}
	}
}

// curl runs curl in a client container sharing netns's network namespace
// and returns its output (-w format: code and time).
func (e *podEngine) curl(t *testing.T, env *podEnv, netns string, url string) string {
	t.Helper()
	out, err := e.try(2*time.Minute, e.runArgs("--rm", "--network", "container:"+netns, env.curl,
		"/usr/bin/curl", "-g", "-s", "-o", "/dev/null", "-m", "30", "-w", "%{http_code} %{time_total}", url)...)
	if err != nil {
		t.Fatalf("curl %s from a container in %s's network namespace: %v: %s", url, netns, err, out)
	}
	return strings.TrimSpace(out)
}

// ruleStatus is the part of `unplug fault list --json` the tests check.
type ruleStatus struct {
	ID      int    `json:"id"`
	Spec    string `json:"spec"`
	Dropped uint64 `json:"dropped"`
}

// faultList reads serve's rules through a second /unplug in its container.
func (e *podEngine) faultList(t *testing.T, name string) []ruleStatus {
	t.Helper()
	out := e.must(t, "exec", name, "/unplug", "fault", "list", "--json")
	var rules []ruleStatus
	if err := json.Unmarshal([]byte(out), &rules); err != nil {
		t.Fatalf("fault list --json: %v: %s", err, out)
	}
	return rules
}

// exercise is what every serve recipe does: the HTTP service answers over
// IPv4 (and IPv6 unless v4only) to a client container in the namespace; a
// 3 s outage added through the control socket is survived by
// retransmission, and the rule counts what it dropped.
func (e *podEngine) exercise(t *testing.T, env *podEnv, c *container, netns string, v4only bool) {
	t.Helper()
	if got := e.curl(t, env, netns, "http://198.18.0.2/404"); !strings.HasPrefix(got, "404 ") {
		t.Fatalf("curl over IPv4: %q, want 404", got)
	}
	if !v4only {
		if got := e.curl(t, env, netns, "http://[fd00:198:18::2]/404"); !strings.HasPrefix(got, "404 ") {
			t.Fatalf("curl over IPv6: %q, want 404", got)
		}
	}
	add := e.must(t, "exec", c.name, "/unplug", "fault", "add", "drop for=3s")
	got := e.curl(t, env, netns, "http://198.18.0.2/404")
	if !strings.HasPrefix(got, "404 ") {
		t.Fatalf("curl through a 3 s outage: %q, want 404 after retransmissions", got)
	}
	rules := e.faultList(t, c.name)
	var outage *ruleStatus
	for i := range rules {
		if rules[i].Spec == "drop for=3s" {
			outage = &rules[i]
		}
	}
	if outage == nil || outage.Dropped == 0 {
		t.Fatalf("after curl through the outage (%s), rules %+v: want the outage rule with drops", strings.TrimSpace(add), rules)
	}
	t.Logf("curl through the outage: %s (code, seconds); outage rule dropped %d packets", got, outage.Dropped)
}

// testRecipeA is recipe A: serve creates the TUN with CAP_NET_ADMIN as
// uid. serveArgs nil runs the image's default command (serve, uid 65534
// by the image's USER); otherwise serve writes a capture to a bind mount,
// which tshark must read after the container ends — a kill -9 included,
// losing at most the last second.
func (e *podEngine) testRecipeA(t *testing.T, env *podEnv, uid int, serveArgs []string, how string) {
	before := hostTuns(t)
	name := fmt.Sprintf("%s-%s-a-%d-%s", env.tag, e.name, uid, how)
	args := []string{"--network", "none", "--cap-add", "NET_ADMIN", "--device", env.tunNode + ":/dev/net/tun"}
	if uid != 65534 {
		args = append(args, "--user", strconv.Itoa(uid))
	}
	pcap := ""
	if serveArgs != nil {
		dir := sharedDir(t, 0o777) // writable by the container's uid, whatever it is on the host
		pcap = filepath.Join(dir, "a.pcapng")
		args = append(args, "-v", dir+":/cap", env.image, "serve", "--pcap", "/cap/a.pcapng")
		args = append(args, serveArgs...)
	} else {
		args = append(args, env.image)
	}
	c := e.start(t, name, "unplug: peer 198.18.0.2", args...)
	if got, want := hostUIDOf(t, c.pid), e.hostUID(t, uid); got != want {
		t.Errorf("serve runs as host uid %d, want %d (uid %d in the container)", got, want, uid)
	}
	e.exercise(t, env, c, name, false)
	var seen uint64 // packets the peer had seen (the capture has every one, dropped too)
	if pcap != "" {
		var st struct {
			Link struct{ In, Out uint64 } `json:"link"`
		}
		out := e.must(t, "exec", name, "/unplug", "status", "--json")
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status --json: %v: %s", err, out)
		}
		seen = st.Link.In + st.Link.Out
	}
	if pcap != "" && how == "kill" {
		// The capture is flushed at least every second: what happened more
		// than a second before the kill is in the file.
		time.Sleep(2 * time.Second)
	}
	e.end(t, c, how)
	checkNoNewHostTuns(t, before)
	if pcap != "" {
		if n := checkPcap(t, pcap); uint64(n) < seen {
			t.Errorf("capture after podman %s holds %d packets; the peer had seen %d two seconds before the end (the capture is flushed at least every second)", how, n, seen)
		}
	}
}

// checkPcap reads a capture with tshark: it must parse to the end, hold
// the HTTP exchanges, and comment the packets the outage dropped. It
// returns the number of packets.
func checkPcap(t *testing.T, path string) int {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tshark", "-r", path, "-T", "fields", "-e", "frame.number", "-e", "frame.comment").CombinedOutput()
	if err != nil {
		t.Fatalf("tshark -r %s (%d bytes): %v\n%s", path, fi.Size(), err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	dropped := 0
	for _, l := range lines {
		if strings.Contains(l, "drop") {
			dropped++
		}
	}
	if len(lines) < 10 || dropped == 0 {
		t.Fatalf("capture %s (%d bytes): %d packets, %d with a drop comment; want the exchanges and the outage's drops\n%s",
			path, fi.Size(), len(lines), dropped, out)
	}
	t.Logf("capture: %d bytes, %d packets read by tshark, %d with a drop comment", fi.Size(), len(lines), dropped)
	return len(lines)
}

// testIPv6Disabled runs recipe A in a namespace with IPv6 disabled (as
// Docker's --network none has it): serve says so in one line and serves
// IPv4.
func (e *podEngine) testIPv6Disabled(t *testing.T, env *podEnv) {
	name := fmt.Sprintf("%s-%s-a-noipv6", env.tag, e.name)
	c := e.start(t, name, "unplug: peer 198.18.0.2",
		"--network", "none", "--sysctl", "net.ipv6.conf.all.disable_ipv6=1", "--sysctl", "net.ipv6.conf.default.disable_ipv6=1",
		"--cap-add", "NET_ADMIN", "--device", env.tunNode+":/dev/net/tun", env.image)
	logs := e.must(t, "logs", name)
	if !strings.Contains(logs, "disable_ipv6=1): serving IPv4 only") || strings.Contains(logs, "fd00:198:18::2") {
		t.Errorf("serve with IPv6 disabled: want the IPv4-only note and no IPv6 address, got:\n%s", logs)
	}
	if got := e.curl(t, env, name, "http://198.18.0.2/404"); !strings.HasPrefix(got, "404 ") {
		t.Fatalf("curl over IPv4: %q, want 404", got)
	}
	e.end(t, c, "stop")
}

// testRecipeB is recipe B: root on the host creates a persistent TUN owned
// by the container's uid (as the host counts it) in a namespace held by a
// pause container; serve attaches to it with no capability at all. Under
// a user namespace, a device owned by the container's uid number itself
// (not its host uid) must be refused with the host uid in the fix.
func (e *podEngine) testRecipeB(t *testing.T, env *podEnv, uid int) {
	before := hostTuns(t)
	holder := fmt.Sprintf("%s-%s-b-%d-netns", env.tag, e.name, uid)
	// The holder only keeps the namespace: catatonit -P pauses (it is
	// static, so it runs from the scratch image).
	catatonit, err := exec.LookPath("catatonit")
	if err != nil {
		t.Fatal(err)
	}
	h := e.start(t, holder, "", "--network", "none", "-v", catatonit+":/catatonit:ro",
		"--entrypoint", "/catatonit", env.image, "-P")
	ip := func(args ...string) {
		t.Helper()
		argv := append([]string{"-t", strconv.Itoa(h.pid), "-n", "ip"}, args...)
		if out, err := exec.Command("nsenter", argv...).CombinedOutput(); err != nil {
			t.Fatalf("nsenter %s: %v: %s", strings.Join(argv, " "), err, out)
		}
	}
	hostUID := e.hostUID(t, uid)
	serve := []string{"--network", "container:" + holder, "--cap-drop", "ALL", "--user", strconv.Itoa(uid),
		"--device", env.tunNode + ":/dev/net/tun", env.image, "serve", "--attach", "unplug0"}

	if hostUID != uid {
		// The wrong owner: the uid number, not the host's uid. Inside, the
		// owner reads as the overflow uid and the pre-check cannot tell.
		ip("tuntap", "add", "unplug0", "mode", "tun", "user", strconv.Itoa(uid))
		out, err := e.try(time.Minute, e.runArgs(append([]string{"--rm"}, serve...)...)...)
		want := fmt.Sprintf("ip tuntap add unplug0 mode tun user %d (uid %d here is uid %d there)", hostUID, uid, hostUID)
		if err == nil || !strings.Contains(out, want) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("attach to a TUN owned by host uid %d: %v, %q; want one line with %q", uid, err, out, want)
		}
		t.Logf("attach to a TUN owned by host uid %d: %s", uid, strings.TrimSpace(out))
		ip("link", "del", "unplug0")
	}
	ip("tuntap", "add", "unplug0", "mode", "tun", "user", strconv.Itoa(hostUID))
	ip("addr", "add", "198.18.0.1/24", "dev", "unplug0")
	ip("-6", "addr", "add", "fd00:198:18::1/64", "dev", "unplug0", "nodad")
	ip("link", "set", "unplug0", "up")
	name := fmt.Sprintf("%s-%s-b-%d", env.tag, e.name, uid)
	c := e.start(t, name, "unplug: peer 198.18.0.2", serve...)
	c.netns = "" // the holder's: it stays, and goes when the holder ends
	e.exercise(t, env, c, holder, false)
	e.end(t, c, "stop")
	e.end(t, h, "stop")
	checkNoNewHostTuns(t, before)
}

// testRecipeC is recipe C: no capability, a private user and network
// namespace. A real scenario (`unplug run timeout`) in the unplug image,
// with /proc/sys unmasked for its sysctls; and `unplug exec` running curl
// through a fault rule in an application image.
func (e *podEngine) testRecipeC(t *testing.T, env *podEnv, uid int) {
	u := strconv.Itoa(uid)
	out, err := e.try(3*time.Minute, e.runArgs("--rm", "--network", "none", "--user", u, "--security-opt", "unmask=/proc/sys",
		"--device", env.tunNode+":/dev/net/tun", env.image, "run", "timeout", "--expect", "ETIMEDOUT")...)
	if err != nil || !strings.Contains(out, "outcome    ETIMEDOUT") || !strings.Contains(out, "verdict    PASS") {
		t.Fatalf("unplug run timeout as uid %d: %v\n%s", uid, err, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "outcome") || strings.HasPrefix(l, "verdict") {
			t.Log(l)
		}
	}
	out, err = e.try(2*time.Minute, e.runArgs("--rm", "--network", "none", "--user", u,
		"--device", env.tunNode+":/dev/net/tun", env.curl, "/unplug", "exec", "--fault", "drop for=2s", "--",
		"/usr/bin/curl", "-s", "-o", "/dev/null", "-m", "30", "-w", "%{http_code} %{time_total}", "http://198.18.0.2/404")...)
	if err != nil || !strings.HasPrefix(strings.TrimSpace(out), "404 ") {
		t.Fatalf("unplug exec curl through a 2 s outage as uid %d: %v: %q", uid, err, out)
	}
	t.Logf("unplug exec curl through a 2 s outage: %s", strings.TrimSpace(out))
}

// testRecipeCErrors checks the one-line errors of recipe C's missing
// preconditions: /proc/sys read-only, a seccomp filter answering ENOSYS,
// and (rootless) the host's 0600 /dev/net/tun.
func (e *podEngine) testRecipeCErrors(t *testing.T, env *podEnv) {
	dev := env.tunNode + ":/dev/net/tun"
	profile := filepath.Join(sharedDir(t, 0o755), "enosys.json")
	// Allow everything but clone(2) and unshare(2) with CLONE_NEWUSER,
	// which get ENOSYS, as some runtimes' filters answer.
	const newUser = unix.CLONE_NEWUSER
	rule := func(name string) string {
		return fmt.Sprintf(`{"names":[%q],"action":"SCMP_ACT_ERRNO","errnoRet":%d,"args":[{"index":0,"value":%d,"valueTwo":%d,"op":"SCMP_CMP_MASKED_EQ"}]}`,
			name, unix.ENOSYS, newUser, newUser)
	}
	if err := os.WriteFile(profile, []byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[`+rule("clone")+`,`+rule("unshare")+`]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"read-only /proc/sys", []string{"--device", dev, env.image, "run", "timeout"},
			[]string{"/proc/sys is read-only", "--security-opt unmask=/proc/sys"}},
		{"seccomp ENOSYS", []string{"--security-opt", "seccomp=" + profile, "--device", dev, env.image, "exec", "--", "/unplug", "help"},
			[]string{"function not implemented", "seccomp filter refuses clone", "seccomp=unconfined"}},
	}
	if e.uidMap != "" {
		if fi, err := os.Stat("/dev/net/tun"); err == nil && fi.Mode().Perm()&0o006 != 0o006 {
			cases = append(cases, struct {
				name string
				args []string
				want []string
			}{"host node 0600 in a user namespace", []string{"--device", "/dev/net/tun", env.image, "exec", "--", "/unplug", "help"},
				[]string{"permission denied", "outside this user namespace", "0666"}})
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := e.try(2*time.Minute, e.runArgs(append([]string{"--rm", "--network", "none"}, tc.args...)...)...)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != exitFail {
				t.Fatalf("exit %v, want %d; output:\n%s", err, exitFail, out)
			}
			msg := strings.TrimSpace(out)
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans lines:\n%s", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			for _, bad := range []string{"run unplug as root", "run as root", "add --device", "in docker"} {
				if strings.Contains(msg, bad) {
					t.Errorf("error %q misleads with %q", msg, bad)
				}
			}
			t.Log(msg)
		})
	}
}
