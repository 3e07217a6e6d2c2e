package control

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// maxSocketPath is the longest path a unix socket can be bound at: the size
// of sockaddr_un.sun_path less its terminating NUL (107 on Linux, 103 on
// macOS).
var maxSocketPath = len(syscall.RawSockaddrUnix{}.Path) - 1

// probeTimeout bounds the connect used to tell a live socket from a stale one.
const probeTimeout = time.Second

// Listen creates the control socket at path, creating its parent directory
// with mode 0700 if missing. The socket is bound inside a fresh 0700
// directory, set to mode 0600 and only then linked to path, so no other user
// can connect to it during the process umask's window. An existing path is
// handled as follows: a socket that answers is another server (error); a
// stale socket (connection refused) owned by the current uid is removed; a
// stale socket owned by another uid, or anything that is not a socket, is
// left alone and reported.
func (s *Server) Listen(path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return errors.New("listen on control socket: server already closed")
	case s.ln != nil:
		return fmt.Errorf("listen on control socket %s: already listening on %s", path, s.path)
	case path == "":
		return fmt.Errorf("control socket path is empty; %w", ErrSocketPath)
	case len(path) > maxSocketPath:
		return fmt.Errorf("control socket path %s is too long (%d bytes, the limit is %d); %w", path, len(path), maxSocketPath, ErrShorterPath)
	}
	if err := prepareDir(filepath.Dir(path)); err != nil {
		return err
	}
	if err := clearStale(path); err != nil {
		return err
	}
	ln, err := bindPrivate(path)
	if err != nil {
		return err
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return fmt.Errorf("inspect control socket %s: %w", path, err)
	}
	s.ln, s.path, s.sock = ln, path, fi
	return nil
}

// prepareDir creates the socket's directory if needed and refuses one that
// another non-root user owns: that user could replace the socket with their
// own and intercept `unplug fault`.
func prepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cannot create control directory %s: %w; %w in a directory you can write", dir, errnoOf(err), ErrSocketPath)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("inspect control directory %s: %w", dir, err)
	}
	if owner, ok := fileOwner(fi); ok && owner != os.Geteuid() && owner != 0 {
		return fmt.Errorf("control directory %s belongs to uid %d, who could replace the socket; %w in a directory you own", dir, owner, ErrSocketPath)
	}
	return nil
}

// clearStale makes path free for a new socket, or explains why it is not.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect control socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; remove it or %w", path, ErrSocketPath)
	}
	c, err := net.DialTimeout("unix", path, probeTimeout)
	if err == nil {
		c.Close()
		return fmt.Errorf("another unplug serve is already listening on %s; stop it or %w", path, ErrSocketPath)
	}
	if errors.Is(err, syscall.ENOENT) {
		return nil // removed since Lstat
	}
	if owner, ok := fileOwner(fi); ok && owner != os.Geteuid() {
		return fmt.Errorf("control socket %s belongs to uid %d; %w", path, owner, ErrSocketPath)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("control socket %s exists but does not accept connections (%v); stop the unplug serve using it or %w", path, errnoOf(err), ErrSocketPath)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale control socket %s: %w", path, errnoOf(err))
	}
	return nil
}

// bindPrivate binds a listening socket that appears at path with mode 0600.
// It binds inside a private 0700 directory next to path, fixes the mode and
// hard-links the socket into place; link fails if path appeared meanwhile,
// so a concurrently started server is never clobbered. If that is not
// possible (the private path would be too long, or the file system refuses
// to link sockets) it binds at path directly and fixes the mode right after.
func bindPrivate(path string) (*net.UnixListener, error) {
	tmpDir, err := os.MkdirTemp(filepath.Dir(path), ".unplug-")
	if err == nil {
		defer os.RemoveAll(tmpDir)
		tmp := filepath.Join(tmpDir, "s")
		if len(tmp) <= maxSocketPath {
			ln, err := bindUnix(tmp)
			if err != nil {
				return nil, fmt.Errorf("create control socket %s: %w", path, errnoOf(err))
			}
			err = os.Link(tmp, path)
			if err == nil {
				return ln, nil
			}
			ln.Close()
			if errors.Is(err, fs.ErrExist) {
				return nil, fmt.Errorf("another unplug serve is already listening on %s; stop it or %w", path, ErrSocketPath)
			}
		}
	}
	ln, err := bindUnix(path)
	if err != nil {
		return nil, fmt.Errorf("create control socket %s: %w", path, errnoOf(err))
	}
	return ln, nil
}

// bindUnix listens at p and sets its mode to 0600. The listener never
// unlinks its path on Close: the server removes the socket file itself, and
// only if it is still its own.
func bindUnix(p string) (*net.UnixListener, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(p, 0o600); err != nil {
		ln.Close()
		os.Remove(p) // bound just now, so it is ours
		return nil, err
	}
	return ln, nil
}

// errnoOf strips an error down to its system error ("permission denied")
// when it carries one, so messages do not repeat the path and operation.
func errnoOf(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}
