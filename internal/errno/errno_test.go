package errno

import (
	"errors"
	"fmt"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
)

func TestOf(t *testing.T) {
	tests := []struct {
		err  tcpip.Error
		want Errno
	}{
		{&tcpip.ErrTimeout{}, ETIMEDOUT},
		{&tcpip.ErrConnectionReset{}, ECONNRESET},
		{&tcpip.ErrConnectionRefused{}, ECONNREFUSED},
		{&tcpip.ErrConnectionAborted{}, ECONNABORTED},
		// gVisor's syserr maps ErrAborted to EPIPE (a RST in CLOSE-WAIT;
		// Linux's tcp_reset gives EPIPE there too).
		{&tcpip.ErrAborted{}, EPIPE},
		{&tcpip.ErrClosedForSend{}, EPIPE},
		{&tcpip.ErrWouldBlock{}, EAGAIN},
		{&tcpip.ErrNoNet{}, ENETUNREACH},
		{&tcpip.ErrInvalidOptionValue{}, EINVAL},
		{&tcpip.ErrBadBuffer{}, EIO},
	}
	for _, tt := range tests {
		if got := Of(tt.err); got != tt.want {
			t.Errorf("Of(%T) = %s, want %s", tt.err, got, tt.want)
		}
		if got, ok := FromMessage(tt.err.String()); tt.want != EIO && (!ok || got != tt.want) {
			t.Errorf("FromMessage(%q) = %s, %v; want %s", tt.err.String(), got, ok, tt.want)
		}
	}
	if _, ok := Lookup(&tcpip.ErrBadBuffer{}); ok {
		t.Error("Lookup(ErrBadBuffer) found an errno; it is not a socket error")
	}
	if _, ok := Lookup(nil); ok {
		t.Error("Lookup(nil) found an errno")
	}
}

// TestTableHasNoDuplicates: an error listed under two errnos would make the
// answer depend on the table's order.
func TestTableHasNoDuplicates(t *testing.T) {
	seen := map[string]Errno{}
	for _, row := range table {
		for _, e := range row.errs {
			if prev, ok := seen[e.String()]; ok {
				t.Errorf("%T is listed under %s and %s", e, prev, row.errno)
			}
			seen[e.String()] = row.errno
		}
	}
}

func TestIn(t *testing.T) {
	err := fmt.Errorf("write: %w", ETIMEDOUT)
	if In(err) != ETIMEDOUT || !errors.Is(err, ETIMEDOUT) {
		t.Fatalf("In(%v) = %q", err, In(err))
	}
	if In(errors.New("other")) != "" {
		t.Fatal("In found an errno in a plain error")
	}
}
