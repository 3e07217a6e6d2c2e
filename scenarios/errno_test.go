package scenarios

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
)

func TestErrnoName(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"errno", syscall.ETIMEDOUT, "ETIMEDOUT"},
		{"syscall error", os.NewSyscallError("recv", syscall.ECONNRESET), "ECONNRESET"},
		{"wrapped", fmt.Errorf("send: %w", os.NewSyscallError("send", syscall.EPIPE)), "EPIPE"},
		{"net.OpError", &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNREFUSED)}, "ECONNREFUSED"},
		{"EOF", io.EOF, "EOF"},
		{"deadline", fmt.Errorf("recv: %w", os.ErrDeadlineExceeded), "EAGAIN"},
		{"netstack", &NetstackError{&tcpip.ErrTimeout{}}, "ETIMEDOUT"},
		{"netstack closed for send", fmt.Errorf("write: %w", &NetstackError{&tcpip.ErrClosedForSend{}}), "EPIPE"},
		{"gonet flattened", &net.OpError{Op: "read", Err: errors.New((&tcpip.ErrConnectionReset{}).String())}, "ECONNRESET"},
		{"not a socket error", errors.New("the namespace agent died"), ""},
		{"unknown netstack error", &NetstackError{&tcpip.ErrBadBuffer{}}, ""},
		// One table with vlink: gVisor's syserr says EPIPE for ErrAborted.
		{"netstack aborted", &NetstackError{&tcpip.ErrAborted{}}, "EPIPE"},
		{"gonet flattened aborted", errors.New((&tcpip.ErrAborted{}).String()), "EPIPE"},
	}
	for _, tt := range tests {
		if got := ErrnoName(tt.err); got != tt.want {
			t.Errorf("%s: ErrnoName(%v) = %q, want %q", tt.name, tt.err, got, tt.want)
		}
	}
}

func TestValidateExpect(t *testing.T) {
	for _, ok := range []string{"ETIMEDOUT", "etimedout", "EPIPE", "ECONNRESET", "ECONNREFUSED", "EHOSTUNREACH", "recovered", "Survived", "connected"} {
		if err := ValidateExpect(ok); err != nil {
			t.Errorf("ValidateExpect(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "EOF", "timeout", "E2BIG2", "110"} {
		if err := ValidateExpect(bad); err == nil {
			t.Errorf("ValidateExpect(%q) accepted", bad)
		}
	}
}
