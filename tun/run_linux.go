package tun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Run runs argv inside the namespace, as the caller's user, with the
// caller's current environment and working directory, and returns its exit
// code (128+N when signal N killed it).
//
// stdin, stdout and stderr may be nil (/dev/null). An *os.File is handed to
// the program as is, so a terminal stays a terminal; other readers and
// writers are copied through pipes, and Run returns once the program has
// exited and its output is drained (a background process still holding the
// output keeps Run waiting, as with exec.Cmd).
//
// A program that cannot be found yields 127 and the error
// "exec: NAME: not found" (matching exec.ErrNotFound); one that cannot be
// executed yields 126. Cancelling ctx kills the program; Run then returns
// its exit code and ctx.Err().
func (ns *Namespace) Run(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, argv []string) (int, error) {
	if err := ctx.Err(); err != nil {
		return -1, err
	}
	p, err := ns.Start(stdin, stdout, stderr, argv)
	if err != nil {
		return StartCode(err), err
	}
	stop := context.AfterFunc(ctx, p.Kill)
	defer stop()
	code, err := p.Wait()
	if cerr := ctx.Err(); cerr != nil {
		return code, errors.Join(cerr, err)
	}
	return code, err
}

// Program is a program Start started inside the namespace.
type Program struct {
	// PID is the program's process id, valid in the caller's PID
	// namespace (for /proc/PID, pidfd_getfd, signals).
	PID int

	ns     *Namespace
	pidMu  sync.Mutex // guards pidfd against Signal racing collect's close
	pidfd  int        // -1 if pidfd_open failed or once the program exited
	status *net.UnixConn
	st     *runStdio

	done chan struct{} // closed once the exit status arrived
	code int
	err  error
	kill sync.Once
}

// Start starts argv inside the namespace like Run and returns without
// waiting for it; Wait collects its exit code. A program that cannot be
// started yields an error whose StartCode is 127 (not found) or 126.
func (ns *Namespace) Start(stdin io.Reader, stdout, stderr io.Writer, argv []string) (*Program, error) {
	if len(argv) == 0 {
		return nil, errors.New("namespace run: empty command")
	}
	dir, _ := os.Getwd()
	st, err := newRunStdio(stdin, stdout, stderr)
	if err != nil {
		return nil, err
	}
	status, theirs, err := socketPair()
	if err != nil {
		st.started()
		st.wait()
		return nil, err
	}
	fds := append(st.fds(), int(theirs.Fd()))
	resp, _, err := ns.call(context.Background(), request{Op: opRun, Argv: argv, Env: os.Environ(), Dir: dir}, fds...)
	theirs.Close()
	st.started()
	if err != nil {
		status.Close()
		st.wait()
		if resp.Code == 0 {
			resp.Code = -1
		}
		return nil, &startError{code: resp.Code, err: err}
	}
	p := &Program{PID: resp.PID, ns: ns, pidfd: -1, status: status, st: st, done: make(chan struct{})}
	// Opened at once: the agent reaps the program only after it sent the
	// exit status, which Wait has not read yet, so the PID is still ours.
	if fd, err := unix.PidfdOpen(resp.PID, 0); err == nil {
		p.pidfd = fd
	}
	go p.collect()
	return p, nil
}

// startError carries the shell's exit code for a program that could not
// be started.
type startError struct {
	code int
	err  error
}

func (e *startError) Error() string { return e.err.Error() }
func (e *startError) Unwrap() error { return e.err }

// StartCode returns the exit code a shell gives a program that could not be
// started (127 not found, 126 not executable), or -1 for any other error.
func StartCode(err error) int {
	var se *startError
	if errors.As(err, &se) {
		return se.code
	}
	return -1
}

// collect waits for the exit status the agent sends when the program ends.
func (p *Program) collect() {
	var resp response
	if _, err := receive(p.status, make([]byte, 1024), &resp); err != nil {
		p.code, p.err = -1, p.ns.goneError("run")
	} else {
		p.code = resp.Code
	}
	p.err = errors.Join(p.err, p.st.wait())
	p.status.Close()
	p.pidMu.Lock()
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
	p.pidMu.Unlock()
	close(p.done)
}

// Done is closed once the program has exited and its output is drained.
func (p *Program) Done() <-chan struct{} { return p.done }

// Wait waits for the program to exit and returns its exit code (128+N when
// signal N killed it).
func (p *Program) Wait() (int, error) {
	<-p.done
	return p.code, p.err
}

// Signal sends sig to the program (not to anything it started). It is an
// error once the program has exited.
func (p *Program) Signal(sig syscall.Signal) error {
	p.pidMu.Lock()
	defer p.pidMu.Unlock()
	select {
	case <-p.done:
		return os.ErrProcessDone
	default:
	}
	if p.pidfd < 0 {
		return fmt.Errorf("signal %v: no pidfd for process %d", sig, p.PID)
	}
	if err := unix.PidfdSendSignal(p.pidfd, sig, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return os.ErrProcessDone
		}
		return fmt.Errorf("signal %v to process %d: %w", sig, p.PID, err)
	}
	return nil
}

// Kill asks the agent to kill the program with SIGKILL.
func (p *Program) Kill() {
	p.kill.Do(func() { p.status.Write([]byte("kill")) })
}

// runStdio connects a program's stdio to the caller's readers and writers.
type runStdio struct {
	child      [3]*os.File // what the program gets
	closeStart []*os.File  // our copies of child ends, closed once sent
	closeWait  []*os.File  // closed after the program exits
	copiers    sync.WaitGroup
	mu         sync.Mutex
	copyErr    error
}

// newRunStdio prepares descriptors for the three streams; a shared
// writer for stdout and stderr gets one pipe, so it is never written
// concurrently.
func newRunStdio(stdin io.Reader, stdout, stderr io.Writer) (*runStdio, error) {
	s := &runStdio{}
	var err error
	if s.child[0], err = s.input(stdin); err != nil {
		s.started()
		return nil, err
	}
	if s.child[1], err = s.output(stdout); err != nil {
		s.started()
		s.wait()
		return nil, err
	}
	if stderr != nil && sameWriter(stdout, stderr) {
		s.child[2] = s.child[1]
		return s, nil
	}
	if s.child[2], err = s.output(stderr); err != nil {
		s.started()
		s.wait()
		return nil, err
	}
	return s, nil
}

// input returns the program's stdin.
func (s *runStdio) input(r io.Reader) (*os.File, error) {
	if f, ok := r.(*os.File); ok && f != nil {
		return f, nil
	}
	if r == nil {
		return s.devNull(os.O_RDONLY)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("namespace run: stdin pipe: %w", err)
	}
	s.closeStart = append(s.closeStart, pr)
	s.closeWait = append(s.closeWait, pw)
	// Not waited for: like exec.Cmd, a reader that never returns must not
	// block Run. Closing pw after exit ends the copy at its next write.
	go func() {
		io.Copy(pw, r)
		pw.Close()
	}()
	return pr, nil
}

// output returns the program's stdout or stderr.
func (s *runStdio) output(w io.Writer) (*os.File, error) {
	if f, ok := w.(*os.File); ok && f != nil {
		return f, nil
	}
	if w == nil {
		return s.devNull(os.O_WRONLY)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("namespace run: output pipe: %w", err)
	}
	s.closeStart = append(s.closeStart, pw)
	s.copiers.Go(func() {
		_, err := io.Copy(w, pr)
		pr.Close()
		s.mu.Lock()
		s.copyErr = errors.Join(s.copyErr, err)
		s.mu.Unlock()
	})
	return pw, nil
}

// devNull opens /dev/null for a missing stream.
func (s *runStdio) devNull(flag int) (*os.File, error) {
	f, err := os.OpenFile(os.DevNull, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("namespace run: %w", err)
	}
	s.closeStart = append(s.closeStart, f)
	return f, nil
}

// fds returns the descriptors to send. Fd puts them in blocking mode, which
// is what a program expects of its stdio.
func (s *runStdio) fds() []int {
	return []int{int(s.child[0].Fd()), int(s.child[1].Fd()), int(s.child[2].Fd())}
}

// started closes our copies of the program's ends, so the output copies
// see EOF when the program (and anything it started) is done.
func (s *runStdio) started() {
	closeFiles(s.closeStart)
	s.closeStart = nil
}

// wait drains the output copies and returns their first errors.
func (s *runStdio) wait() error {
	s.copiers.Wait()
	closeFiles(s.closeWait)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.copyErr != nil {
		return fmt.Errorf("namespace run: copy output: %w", s.copyErr)
	}
	return nil
}

// sameWriter reports whether a and b are the same comparable writer.
func sameWriter(a, b io.Writer) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a == b
}
