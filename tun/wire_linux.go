package tun

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// The agent protocol: one JSON message per SOCK_SEQPACKET datagram,
// descriptors alongside as SCM_RIGHTS. The parent sends a request and reads
// exactly one response; requests are serialized. A response with
// descriptors comes in two datagrams: the descriptors (a response with
// More set), then — once the agent has closed its own copies — the
// response itself. So when the parent has the response, no copy is left
// in the agent: a socket the parent closes is closed at once, not kept
// open (and its FIN held back) until the agent gets round to closing it.

// Request operations.
const (
	opInit      = "init"
	opSocket    = "socket"
	opSysctlSet = "sysctl-set"
	opSysctlGet = "sysctl-get"
	opRun       = "run"
)

// maxMessage bounds one protocol message (a run request carries the
// environment).
const maxMessage = 1 << 18

// maxFDs bounds the descriptors attached to one message.
const maxFDs = 4

// request is a parent-to-agent message.
type request struct {
	Op      string            `json:"op"`
	TUN     Config            `json:"tun,omitzero"`
	Sysctls map[string]string `json:"sysctls,omitempty"`
	Domain  int               `json:"domain,omitempty"`
	Type    int               `json:"type,omitempty"`
	Proto   int               `json:"proto,omitempty"`
	Name    string            `json:"name,omitempty"`
	Value   string            `json:"value,omitempty"`
	Argv    []string          `json:"argv,omitempty"`
	Env     []string          `json:"env,omitempty"`
	Dir     string            `json:"dir,omitempty"`
}

// response is an agent-to-parent message.
type response struct {
	Err   *wireError `json:"err,omitempty"`
	Name  string     `json:"name,omitempty"`
	MTU   int        `json:"mtu,omitempty"`
	Value string     `json:"value,omitempty"`
	PID   int        `json:"pid,omitempty"`
	Code  int        `json:"code,omitempty"`
	// Offload says the TUN descriptor carries virtio-net headers.
	Offload bool `json:"offload,omitempty"`
	// More marks the first datagram of a response with descriptors: they
	// belong to the response that follows.
	More bool `json:"more,omitempty"`
}

// sendResponse sends resp with fds and closes fds: the descriptors first,
// then this process's copies closed, then resp (see the protocol above).
func sendResponse(c *net.UnixConn, resp response, fds []int) error {
	if len(fds) == 0 {
		return send(c, resp)
	}
	err := send(c, response{More: true}, fds...)
	closeFDs(fds)
	if err != nil {
		return err
	}
	return send(c, resp)
}

// receiveResponse reads one response and the descriptors that came with
// it (see sendResponse); the caller owns them.
func receiveResponse(c *net.UnixConn, buf []byte, resp *response) ([]int, error) {
	fds, err := receive(c, buf, resp)
	if err != nil || !resp.More {
		return fds, err
	}
	*resp = response{}
	more, err := receive(c, buf, resp)
	fds = append(fds, more...)
	if err == nil && resp.More {
		err = errors.New("receive response: two descriptor datagrams in a row")
	}
	if err != nil {
		closeFDs(fds)
		return nil, err
	}
	return fds, nil
}

// wireError carries an error across the socket keeping what errors.Is
// needs: the sentinel (Kind) and the errno.
type wireError struct {
	Msg   string `json:"msg"`
	Kind  string `json:"kind,omitempty"`
	Errno int    `json:"errno,omitempty"`
}

// kinds maps sentinel errors to their wire names.
var kinds = map[string]error{
	"notun":        ErrNoTunDevice,
	"perm":         ErrPermission,
	"exists":       ErrExists,
	"notfound":     ErrNotFound,
	"execnotfound": exec.ErrNotFound,
}

// encodeError flattens err for the wire.
func encodeError(err error) *wireError {
	if err == nil {
		return nil
	}
	we := &wireError{Msg: err.Error()}
	for name, kind := range kinds {
		if errors.Is(err, kind) {
			we.Kind = name
		}
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		we.Errno = int(errno)
	}
	return we
}

// decode rebuilds an error that still matches its sentinel and errno.
func (we *wireError) decode() error {
	if we == nil {
		return nil
	}
	var cause error
	if we.Errno != 0 {
		cause = syscall.Errno(we.Errno)
	}
	return &userError{msg: we.Msg, kind: kinds[we.Kind], err: cause}
}

// send writes one message with descriptors attached.
func send(c *net.UnixConn, v any, fds ...int) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode message: %w", err)
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("send message: %w", err)
	}
	return nil
}

// receive reads one message into v and returns the descriptors that came
// with it (close-on-exec); the caller owns them.
func receive(c *net.UnixConn, buf []byte, v any) ([]int, error) {
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if errors.Is(err, io.EOF) {
		return nil, errEOF
	}
	if err != nil {
		return nil, err
	}
	fds, ferr := parseRights(oob[:oobn])
	switch {
	case ferr != nil:
	case n == 0:
		ferr = errEOF
	case flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0:
		ferr = errors.New("receive message: truncated")
	default:
		ferr = json.Unmarshal(buf[:n], v)
	}
	if ferr != nil {
		closeFDs(fds)
		return nil, ferr
	}
	return fds, nil
}

// errEOF reports that the other end closed the socket (a zero-length
// SOCK_SEQPACKET read).
var errEOF = errors.New("connection closed")

// parseRights extracts SCM_RIGHTS descriptors.
func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w", err)
	}
	var all []int
	for i := range msgs {
		if fds, err := unix.ParseUnixRights(&msgs[i]); err == nil {
			all = append(all, fds...)
		}
	}
	return all, nil
}

// closeFDs closes raw descriptors.
func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// socketPair returns a connected SOCK_SEQPACKET pair: a *net.UnixConn for
// this process and an *os.File to hand to another.
func socketPair() (*net.UnixConn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "agent-socket")
	defer mine.Close()
	theirs := os.NewFile(uintptr(fds[1]), "agent-socket")
	c, err := fileUnixConn(mine)
	if err != nil {
		theirs.Close()
		return nil, nil, err
	}
	return c, theirs, nil
}

// fileUnixConn turns a unix socket file into a *net.UnixConn (a duplicate;
// the caller still closes f).
func fileUnixConn(f *os.File) (*net.UnixConn, error) {
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("wrap unix socket: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("wrap unix socket: got %T", c)
	}
	return uc, nil
}

// closeFiles closes every non-nil file.
func closeFiles(files []*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}
