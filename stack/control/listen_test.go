package control

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// makeStale leaves a socket file at path with nothing listening on it, as a
// crashed server would.
func makeStale(t *testing.T, path string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := net.Dial("unix", path); err == nil {
		t.Fatal("stale socket still accepts connections")
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create files owned by another uid")
	}
}

func TestListenCreatesPrivateSocket(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "a", "b")
	path := filepath.Join(dir, "control.sock")
	srv := newServer(t, path, nil)
	t.Cleanup(func() { srv.Close() })

	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %v, want socket with 0600", fi.Mode())
	}
	for _, d := range []string{filepath.Join(base, "a"), dir} {
		di, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if di.Mode().Perm()&0o077 != 0 {
			t.Errorf("created directory %s has mode %v, want no group/other access", d, di.Mode().Perm())
		}
	}
	// The private staging directory is gone; only the socket remains.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "control.sock" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("directory holds %v, want only control.sock", names)
	}
}

func TestListenStaleSocket(t *testing.T) {
	path := sockPath(t)
	makeStale(t, path)
	srv := newServer(t, path, testHandlers())
	serve(t, srv)
	var got []string
	if err := Call(context.Background(), path, "echo", []string{"fresh"}, &got); err != nil || len(got) != 1 || got[0] != "fresh" {
		t.Fatalf("Call after replacing stale socket = %q, %v", got, err)
	}
}

func TestListenLiveConflict(t *testing.T) {
	path := sockPath(t)
	first := newServer(t, path, testHandlers())
	serve(t, first)
	before, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}

	second := NewServer()
	err = second.Listen(path)
	want := "another unplug serve is already listening on " + path + "; stop it or choose another control socket path"
	if err == nil || err.Error() != want {
		t.Fatalf("second Listen = %v, want %q", err, want)
	}
	if err := second.Close(); err != nil {
		t.Fatalf("Close of the server that failed to listen: %v", err)
	}
	after, err := os.Lstat(path)
	if err != nil || !os.SameFile(before, after) {
		t.Fatalf("first server's socket was replaced or removed (err %v)", err)
	}
	if err := Call(context.Background(), path, "none", nil, nil); err != nil {
		t.Fatalf("first server no longer answers: %v", err)
	}
}

func TestListenRefusesNonSocket(t *testing.T) {
	tests := []struct {
		name   string
		create func(t *testing.T, path string)
	}{
		{name: "regular file", create: func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "directory", create: func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "symlink to a stale socket", create: func(t *testing.T, path string) {
			target := path + ".real"
			makeStale(t, target)
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := sockPath(t)
			tt.create(t, path)
			before, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			err = NewServer().Listen(path)
			want := path + " exists and is not a socket; remove it or choose another control socket path"
			if err == nil || err.Error() != want {
				t.Fatalf("Listen = %v, want %q", err, want)
			}
			after, err := os.Lstat(path)
			if err != nil || !os.SameFile(before, after) {
				t.Fatalf("%s was removed or replaced (err %v)", path, err)
			}
		})
	}
}

func TestListenStaleSocketOfOtherUID(t *testing.T) {
	requireRoot(t)
	path := sockPath(t)
	makeStale(t, path)
	if err := os.Lchown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	err := NewServer().Listen(path)
	want := "control socket " + path + " belongs to uid 65534; choose another control socket path"
	if err == nil || err.Error() != want {
		t.Fatalf("Listen = %v, want %q", err, want)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("other uid's socket was removed: %v", err)
	}
}

func TestListenRefusesDirectoryOfOtherUser(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	err := NewServer().Listen(filepath.Join(dir, "control.sock"))
	if err == nil || !strings.HasPrefix(err.Error(), "control directory "+dir+" belongs to uid 65534") {
		t.Fatalf("Listen = %v, want refusal of uid 65534's directory", err)
	}
}

func TestListenBadPath(t *testing.T) {
	long := "/tmp/" + strings.Repeat("x", maxSocketPath)
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, wantPrefix string
	}{
		{name: "empty", path: "", wantPrefix: "control socket path is empty; choose another control socket path"},
		{name: "too long", path: long, wantPrefix: "control socket path " + long + " is too long"},
		{name: "parent is a file", path: filepath.Join(notDir, "control.sock"), wantPrefix: "cannot create control directory " + notDir + ": not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := NewServer().Listen(tt.path)
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantPrefix) {
				t.Fatalf("Listen(%q) = %v, want prefix %q", tt.path, err, tt.wantPrefix)
			}
		})
	}
}

func TestListenTwice(t *testing.T) {
	srv := newServer(t, sockPath(t), nil)
	t.Cleanup(func() { srv.Close() })
	if err := srv.Listen(sockPath(t)); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Fatalf("second Listen = %v", err)
	}
}

// TestListenLongPathFallback uses a path so long that the private staging
// socket would not fit, forcing the bind-then-chmod fallback.
func TestListenLongPathFallback(t *testing.T) {
	dir := t.TempDir()
	name := strings.Repeat("s", maxSocketPath-len(dir)-1)
	path := filepath.Join(dir, name)
	if len(path) != maxSocketPath {
		t.Fatalf("test path is %d bytes, want %d", len(path), maxSocketPath)
	}
	srv := newServer(t, path, testHandlers())
	serve(t, srv)
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %v, want socket with 0600", fi.Mode())
	}
	if err := Call(context.Background(), path, "none", nil, nil); err != nil {
		t.Fatalf("Call: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket after Close: %v", err)
	}
}

// TestErrorsWrapAdvice: path problems wrap ErrSocketPath and a missing
// server wraps ErrNoServer, so a front end can add its own advice (its
// flag's name) without parsing messages.
func TestErrorsWrapAdvice(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		want error
	}{
		{"empty", "", ErrSocketPath},
		{"too long", filepath.Join(dir, strings.Repeat("x", 200)), ErrShorterPath},
		{"too long is a path error", filepath.Join(dir, strings.Repeat("x", 200)), ErrSocketPath},
		{"not a socket", file, ErrSocketPath},
	}
	for _, tt := range tests {
		err := NewServer().Listen(tt.path)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: Listen(%q) = %v, want it to wrap %v", tt.name, tt.path, err, tt.want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Call(ctx, filepath.Join(dir, "none.sock"), "status", nil, nil); !errors.Is(err, ErrNoServer) {
		t.Errorf("Call with nobody listening = %v, want it to wrap ErrNoServer", err)
	}
}
