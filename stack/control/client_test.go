package control

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestCallConnectionErrors(t *testing.T) {
	stale := sockPath(t)
	makeStale(t, stale)
	missing := sockPath(t)
	tests := []struct {
		name, path string
	}{
		{name: "missing socket", path: missing},
		{name: "stale socket", path: stale},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Call(context.Background(), tt.path, "status", nil, nil)
			want := "no unplug serve is listening on " + tt.path + ": start the server or choose the socket it listens on"
			if err == nil || err.Error() != want {
				t.Fatalf("Call = %v, want %q", err, want)
			}
		})
	}
}

func TestCallRequestTooLarge(t *testing.T) {
	var calls atomic.Int64
	_, path := startServer(t, map[string]HandlerFunc{"count": countingHandler(&calls)})
	err := Call(context.Background(), path, "count", []string{strings.Repeat("a", MaxRequestSize)}, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "count request too large") {
		t.Fatalf("Call = %v, want request too large", err)
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("handler ran %d times, want 0", n)
	}
}

func TestCallDecodeError(t *testing.T) {
	_, path := startServer(t, nil)
	var n int
	err := Call(context.Background(), path, "echo", []string{"a"}, &n)
	if err == nil || !strings.HasPrefix(err.Error(), "decode echo response from "+path+": ") {
		t.Fatalf("Call = %v, want decode error", err)
	}
}

func TestCallContextCancel(t *testing.T) {
	started := make(chan struct{})
	_, path := startServer(t, map[string]HandlerFunc{
		"block": func(ctx context.Context, _ []string) (any, error) {
			close(started)
			<-ctx.Done()
			return nil, ctx.Err()
		},
	})
	ctx, cancel := context.WithCancelCause(context.Background())
	cause := errors.New("user pressed ^C")
	go func() {
		<-started
		cancel(cause)
	}()
	err := Call(ctx, path, "block", nil, nil)
	if !errors.Is(err, cause) {
		t.Fatalf("Call = %v, want the context's cause", err)
	}
}

// runClientAs runs one Call in a child process with the given uid and
// returns what it printed: "ok" or the error message.
func runClientAs(t *testing.T, uid uint32, path, op string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// /proc/self/exe lets the child run this test binary even though it
	// lives in a directory the other uid cannot search.
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), childPathEnv+"="+path, childOpEnv+"="+op)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	out, err := cmd.Output()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 3) {
		t.Fatalf("child client as uid %d: %v (output %q)", uid, err, out)
	}
	return string(out)
}

func TestOtherUIDRefused(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat("/proc/self/exe"); err != nil {
		t.Skip("needs /proc/self/exe to re-run the test binary")
	}
	// A directory every uid can search, so only the socket's own mode and
	// the peer-credential check stand in the way.
	dir, err := os.MkdirTemp("", "unplug-control-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "control.sock")
	var calls atomic.Int64
	srv := newServer(t, path, map[string]HandlerFunc{"count": countingHandler(&calls)})
	serve(t, srv)

	tests := []struct {
		name     string
		uid      uint32
		sockMode os.FileMode
		want     string
		ran      int64 // handler calls expected
	}{
		{name: "socket mode keeps other uid out", uid: 65534, sockMode: 0o600,
			want: "permission denied on control socket " + path + " (it belongs to uid 0); run the command as uid 0 or root"},
		{name: "peer credentials refuse other uid", uid: 65534, sockMode: 0o666,
			want: "uid 65534 may not control this unplug serve (it runs as uid 0); run the command as uid 0 or root"},
		{name: "same uid allowed", uid: 0, sockMode: 0o600, want: "ok", ran: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.Chmod(path, tt.sockMode); err != nil {
				t.Fatal(err)
			}
			before := calls.Load()
			if got := runClientAs(t, tt.uid, path, "count"); got != tt.want {
				t.Fatalf("child client printed %q, want %q", got, tt.want)
			}
			if ran := calls.Load() - before; ran != tt.ran {
				t.Fatalf("handler ran %d times, want %d", ran, tt.ran)
			}
		})
	}
}

func TestDefaultPath(t *testing.T) {
	tests := []struct {
		name string
		xdg  string
		euid int
		want string
	}{
		{name: "XDG_RUNTIME_DIR wins", xdg: "/run/user/1000", euid: 1000, want: "/run/user/1000/unplug/control.sock"},
		{name: "XDG_RUNTIME_DIR wins for root too", xdg: "/run/user/0", euid: 0, want: "/run/user/0/unplug/control.sock"},
		{name: "root", euid: 0, want: "/run/unplug/control.sock"},
		{name: "user without runtime dir", euid: 1000, want: "/var/tmp/unplug-1000/control.sock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string {
				if k == "XDG_RUNTIME_DIR" {
					return tt.xdg
				}
				return ""
			}
			if got := defaultPath(getenv, tt.euid, "/var/tmp"); got != tt.want {
				t.Fatalf("defaultPath = %q, want %q", got, tt.want)
			}
		})
	}
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/4242")
	if got := DefaultPath(); got != "/run/user/4242/unplug/control.sock" {
		t.Fatalf("DefaultPath with XDG_RUNTIME_DIR = %q", got)
	}
}
