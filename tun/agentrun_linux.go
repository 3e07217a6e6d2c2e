package tun

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Exit codes for programs that could not be started, as shells use them.
const (
	exitNotFound   = 127
	exitCannotExec = 126
)

// defaultPath is searched when the caller's environment has no PATH.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// startProgram starts req.Argv inside the namespace with the caller's
// stdio (fds[0:3]) and reports its exit status on the status socket
// (fds[3]) once it ends. A message or EOF from the parent on that socket
// kills the program.
func startProgram(req request, fds []int) (response, error) {
	if len(fds) != 4 || len(req.Argv) == 0 {
		closeFDs(fds)
		return response{}, errors.New("namespace agent: malformed run request")
	}
	status, err := statusConn(fds[3])
	if err != nil {
		closeFDs(fds[:3])
		return response{}, err
	}
	stdio := []*os.File{os.NewFile(uintptr(fds[0]), "stdin"), os.NewFile(uintptr(fds[1]), "stdout"), os.NewFile(uintptr(fds[2]), "stderr")}
	defer closeFiles(stdio)
	cmd, code, err := programCommand(req, stdio)
	if err != nil {
		status.Close()
		return response{Code: code}, err
	}
	if err := spawnLocked(cmd, func(error) { reportExit(status, cmd.ProcessState) }); err != nil {
		status.Close()
		return response{Code: execCode(err)}, execError(req.Argv[0], err)
	}
	go killOnRequest(status, cmd.Process)
	return response{PID: cmd.Process.Pid}, nil
}

// statusConn wraps the per-run status socket.
func statusConn(fd int) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), "run-status")
	defer f.Close()
	return fileUnixConn(f)
}

// programCommand resolves argv[0] along the caller's PATH and builds the
// command; on failure it returns the shell's exit code for it.
func programCommand(req request, stdio []*os.File) (*exec.Cmd, int, error) {
	if req.Dir != "" {
		// Checked here: a failed chdir in the child reads "no such file"
		// as if the program were missing.
		if st, err := os.Stat(req.Dir); err != nil || !st.IsDir() {
			return nil, exitCannotExec, fmt.Errorf("exec: %s: working directory %s is not accessible", req.Argv[0], req.Dir)
		}
	}
	path, code, err := lookPath(req.Argv[0], req.Dir, req.Env)
	if err != nil {
		return nil, code, err
	}
	return &exec.Cmd{
		Path:   path,
		Args:   req.Argv,
		Env:    req.Env,
		Dir:    req.Dir,
		Stdin:  stdio[0],
		Stdout: stdio[1],
		Stderr: stdio[2],
		// The program must not outlive the namespace's agent.
		SysProcAttr: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	}, 0, nil
}

// lookPath finds an executable like a shell: names with a slash are used
// as given (relative to dir), others are searched along PATH from env.
func lookPath(name, dir string, env []string) (string, int, error) {
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) && dir != "" {
			p = filepath.Join(dir, p)
		}
		if err := checkExecutable(p); err != nil {
			return "", execCode(err), execError(name, err)
		}
		return name, 0, nil
	}
	var firstErr error
	for _, d := range filepath.SplitList(pathFrom(env)) {
		if d == "" {
			d = "."
		}
		p := filepath.Join(d, name)
		err := checkExecutable(p)
		if err == nil {
			return p, 0, nil
		}
		if firstErr == nil && !errors.Is(err, fs.ErrNotExist) {
			firstErr = err
		}
	}
	if firstErr == nil {
		firstErr = fs.ErrNotExist
	}
	return "", execCode(firstErr), execError(name, firstErr)
}

// pathFrom returns PATH from env, or defaultPath.
func pathFrom(env []string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], "PATH="); ok {
			return v
		}
	}
	return defaultPath
}

// checkExecutable reports why p cannot be executed, if it cannot.
func checkExecutable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return unix.EISDIR
	}
	return unix.Faccessat(unix.AT_FDCWD, p, unix.X_OK, unix.AT_EACCESS)
}

// execError is the one-line error for a program that cannot be run:
// "exec: NAME: not found" (matching exec.ErrNotFound) or the errno.
func execError(name string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return newUserError(exec.ErrNotFound, unix.ENOENT, "exec: %s: not found", name)
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return newUserError(nil, errno, "exec: %s: %v", name, errno)
	}
	return fmt.Errorf("exec: %s: %w", name, err)
}

// execCode maps a lookup failure to 127 (missing) or 126 (not runnable).
func execCode(err error) int {
	if errors.Is(err, fs.ErrNotExist) {
		return exitNotFound
	}
	return exitCannotExec
}

// reportExit sends the program's exit code (128+signal if killed) and
// closes the status socket.
func reportExit(status *net.UnixConn, ps *os.ProcessState) {
	send(status, response{Code: exitCode(ps)})
	status.Close()
}

// exitCode is the shell convention for a finished process.
func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// killOnRequest kills the program when the parent asks (any message) or
// goes away (EOF). After a normal exit the read fails because reportExit
// closed the socket, and Kill of a finished process does nothing.
func killOnRequest(status *net.UnixConn, p *os.Process) {
	var b [64]byte
	_, err := status.Read(b[:])
	if errors.Is(err, net.ErrClosed) {
		return
	}
	p.Kill()
}
