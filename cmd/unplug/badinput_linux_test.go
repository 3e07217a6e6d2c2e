package main

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// anyFailure accepts any non-zero exit code that is not the usage code.
const anyFailure = -1

// TestBadInput runs the built binary with bad input, in a private network
// namespace, and checks each answer: the exit code (2 for usage errors),
// exactly one line on stderr naming what was wrong and how to fix it, and
// nothing half-created (no interface, no capture file, no control socket or
// directory, no process).
func TestBadInput(t *testing.T) {
	requireRoot(t)
	unplugBinary(t)
	if !requireNetns(t) {
		return
	}
	for _, tc := range []struct {
		name  string
		args  []string // $D is the case's scratch directory
		setup func(t *testing.T, dir string)
		code  int
		want  []string
	}{
		{name: "unknown command", args: []string{"frob"}, code: exitUsage,
			want: []string{`unknown command "frob"`, "unplug help"}},
		{name: "unknown flag", args: []string{"serve", "--bogus"}, code: exitUsage,
			want: []string{"unknown flag: --bogus", "unplug serve --help"}},
		{name: "bad flag value", args: []string{"serve", "--mtu", "abc"}, code: exitUsage,
			want: []string{`invalid argument "abc" for "--mtu"`}},
		{name: "mtu out of range", args: []string{"serve", "--mtu", "100"}, code: exitUsage,
			want: []string{"--mtu 100 out of range", "1280-65535"}},
		{name: "busy poll out of range", args: []string{"serve", "--busy-poll", "1s"}, code: exitUsage,
			want: []string{"--busy-poll 1s out of range", "0 (off) to 10ms"}},
		{name: "negative busy poll", args: []string{"exec", "--busy-poll", "-1us", "--", "true"}, code: exitUsage,
			want: []string{"--busy-poll -1µs out of range"}},
		{name: "negative seed", args: []string{"serve", "--seed", "-1"}, code: exitUsage,
			want: []string{`invalid argument "-1" for "--seed"`}},
		{name: "stray argument", args: []string{"serve", "extra"}, code: exitUsage,
			want: []string{`serve takes no arguments, got "extra"`}},
		{name: "malformed fault spec", args: []string{"serve", "--control", "$D/c.sock", "--fault", "drop dir=sideways"}, code: exitUsage,
			want: []string{`"dir=sideways"`, "dir must be in"}},
		{name: "unknown fault action", args: []string{"serve", "--fault", "frob port=80"}, code: exitUsage,
			want: []string{`"frob"`, "unknown action", "drop, loss P% or delay D"}},
		{name: "conflicting selectors", args: []string{"serve", "--fault", "drop port=80 port=81"}, code: exitUsage,
			want: []string{`"port=81"`, "given twice"}},
		{name: "jitter on drop", args: []string{"serve", "--fault", "drop jitter=5ms"}, code: exitUsage,
			want: []string{"jitter only applies to delay"}},
		{name: "malformed fault add", args: []string{"fault", "--control", "$D/c.sock", "add", "loss 200%"}, code: exitUsage,
			want: []string{`"200%"`, "percentage"}},
		{name: "fault without subcommand", args: []string{"fault"}, code: exitUsage,
			want: []string{"fault needs a subcommand", "add SPEC"}},
		{name: "unknown fault subcommand", args: []string{"fault", "frob"}, code: exitUsage,
			want: []string{`unknown fault subcommand "frob"`}},
		{name: "port used by forward and http", args: []string{"serve", "--control", "$D/c.sock", "--forward", "80=127.0.0.1:9"}, code: exitUsage,
			want: []string{"port 80 is used by both http and forward", "--http-port"}},
		{name: "port used by two services", args: []string{"serve", "--control", "$D/c.sock", "--http-port", "7"}, code: exitUsage,
			want: []string{"port 7 is used by both http and echo", "--http-port or --echo-port"}},
		{name: "port out of range", args: []string{"serve", "--http-port", "70000"}, code: exitUsage,
			want: []string{"port 70000 is out of range", "--http-port"}},
		{name: "malformed forward", args: []string{"serve", "--forward", "80"}, code: exitUsage,
			want: []string{"PORT=HOST:PORT"}},
		{name: "tun name exists", args: []string{"serve", "--control", "$D/c.sock", "--pcap", "$D/new.pcapng", "--tun", "lo"}, code: exitFail,
			want: []string{`interface "lo" already exists`, "--tun NAME", "--attach lo"}},
		{name: "attach to a missing device", args: []string{"serve", "--control", "$D/c.sock", "--pcap", "$D/new.pcapng", "--attach", "nope0"}, code: exitFail,
			want: []string{`"nope0" does not exist`, "ip tuntap add nope0 mode tun"}},
		{name: "attach to a non-TUN", args: []string{"serve", "--control", "$D/c.sock", "--attach", "lo"}, code: exitFail,
			want: []string{`"lo" is not a TUN device`, "ip tuntap add"}},
		{name: "stale control socket of another user", args: []string{"serve", "--control", "$D/c.sock"}, code: exitFail,
			setup: func(t *testing.T, dir string) { staleSocket(t, filepath.Join(dir, "c.sock"), nobody) },
			want:  []string{"belongs to uid 65534", "--control PATH"}},
		{name: "control socket in use", args: []string{"serve", "--control", "$D/c.sock", "--pcap", "$D/new.pcapng"}, code: exitFail,
			setup: func(t *testing.T, dir string) { liveSocket(t, filepath.Join(dir, "c.sock")) },
			want:  []string{"another unplug serve is already listening", "--control PATH"}},
		{name: "control path is a file", args: []string{"serve", "--control", "$D/c.sock"}, code: exitFail,
			setup: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "c.sock")) },
			want:  []string{"exists and is not a socket", "--control PATH"}},
		{name: "control directory of another user", args: []string{"serve", "--control", "$D/other/c.sock"}, code: exitFail,
			setup: func(t *testing.T, dir string) { otherUsersDir(t, filepath.Join(dir, "other")) },
			want:  []string{"belongs to uid 65534", "in a directory you own", "--control PATH"}},
		{name: "control directory not creatable", args: []string{"serve", "--control", "/proc/unplug/c.sock"}, code: exitFail,
			want: []string{"cannot create control directory /proc/unplug", "--control PATH"}},
		{name: "capture directory missing", args: []string{"serve", "--control", "$D/run/c.sock", "--pcap", "$D/missing/x.pcapng"}, code: exitFail,
			want: []string{"not writable", "no such file or directory", "--pcap"}},
		{name: "capture is a directory", args: []string{"serve", "--control", "$D/run/c.sock", "--pcap", "$D"}, code: exitFail,
			want: []string{"not writable", "is a directory", "--pcap"}},
		{name: "capture on a full disk", args: []string{"serve", "--control", "$D/run/c.sock", "--pcap", "/dev/full"}, code: exitFail,
			want: []string{"not writable", "no space left on device", "--pcap"}},
		{name: "no serve running", args: []string{"status", "--control", "$D/c.sock"}, code: exitFail,
			want: []string{"no unplug serve is listening on", "unplug serve"}},
		{name: "exec of a missing program", args: []string{"exec", "--", "/nonexistent/prog"}, code: anyFailure,
			want: []string{"/nonexistent/prog", "not found"}},
		{name: "run of an unknown scenario", args: []string{"run", "no-such-scenario"}, code: exitUsage,
			want: []string{"no-such-scenario", "unplug scenarios"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.setup != nil {
				tc.setup(t, dir)
			}
			before := listTree(t, dir)
			links := interfaceNames(t)
			args := slices.Clone(tc.args)
			for i := range args {
				args[i] = strings.ReplaceAll(args[i], "$D", dir)
			}
			code, stdout, stderr := runCLI(t, args...)
			if notWired(stderr) {
				t.Skipf("unplug %s is not implemented yet", args[0])
			}
			switch {
			case tc.code == anyFailure && (code == 0 || code == exitUsage):
				t.Errorf("exit %d, want a failure (not 0, not usage 2)", code)
			case tc.code != anyFailure && code != tc.code:
				t.Errorf("exit %d, want %d", code, tc.code)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			oneLine(t, "stderr", stderr)
			containsAll(t, "error", stderr, tc.want...)
			if after := listTree(t, dir); !slices.Equal(after, before) {
				t.Errorf("files changed in %s:\nbefore %q\nafter  %q", dir, before, after)
			}
			if after := interfaceNames(t); !slices.Equal(after, links) {
				t.Errorf("interfaces changed: before %q, after %q", links, after)
			}
			if kids := descendants(os.Getpid()); len(kids) > 0 {
				t.Errorf("processes left running: %v", kids)
			}
		})
	}
}

// listTree lists the paths below dir with their modes.
func listTree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		out = append(out, strings.TrimPrefix(p, dir)+" "+d.Type().String())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// staleSocket leaves a unix socket at path that nobody listens on, owned
// by uid, as a crashed serve of that user would.
func staleSocket(t *testing.T, path string, uid int) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if err := os.Lchown(path, uid, uid); err != nil {
		t.Fatal(err)
	}
}

// liveSocket listens at path until the test ends, as a running serve does.
func liveSocket(t *testing.T, path string) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
}

func writeFile(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("not a socket\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// otherUsersDir makes a directory that uid 65534 owns.
func otherUsersDir(t *testing.T, path string) {
	t.Helper()
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, nobody, nobody); err != nil {
		t.Fatal(err)
	}
}
