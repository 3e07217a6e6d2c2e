package tun

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestAgentAnswerHoldsNoCopy: when the parent has the agent's response to
// a socket request, the agent holds no copy of the socket any more — it
// closed its own before it answered — so a socket the parent closes is
// closed at once. (With the copy closed after the answer, a client closed
// right away could stay open until the agent ran again: sockdiag's
// TestLookup then saw it receive the peer's FIN in CLOSE_WAIT and vanish
// through LAST_ACK instead of reaching TIME_WAIT, about once in a hundred
// closes under load.) The agent's serve loop runs in this process and is
// held right after it answered, so the count is exact, not a race.
func TestAgentAnswerHoldsNoCopy(t *testing.T) {
	mine, theirs, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mine.Close() })
	conn, err := fileUnixConn(theirs)
	theirs.Close()
	if err != nil {
		t.Fatal(err)
	}
	answered, release := make(chan struct{}), make(chan struct{})
	testHookAnswered = func() { answered <- struct{}{}; <-release }
	t.Cleanup(func() { testHookAnswered = nil })
	a := &agent{conn: conn, buf: make([]byte, maxMessage)}
	done := make(chan error, 1)
	go func() { done <- a.serve() }()
	t.Cleanup(func() {
		mine.Close()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	for i := range 3 {
		if err := send(mine, request{Op: opSocket, Domain: unix.AF_INET, Type: unix.SOCK_STREAM}); err != nil {
			t.Fatal(err)
		}
		var resp response
		fds, err := receiveResponse(mine, make([]byte, maxMessage), &resp)
		if err != nil || resp.Err != nil || len(fds) != 1 {
			t.Fatalf("socket request %d: %v, %+v, %d descriptors", i, err, resp.Err, len(fds))
		}
		<-answered // the agent is past its answer, before anything else
		var st unix.Stat_t
		if err := unix.Fstat(fds[0], &st); err != nil {
			t.Fatal(err)
		}
		if n := holders(t, st.Ino); n != 1 {
			t.Errorf("socket request %d: %d descriptors of the socket in this process after the answer, want 1 (the agent kept its copy)", i, n)
		}
		release <- struct{}{}
		unix.Close(fds[0])
	}
	close(release)
}

// holders counts this process's descriptors of the socket with inode ino.
func holders(t *testing.T, ino uint64) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if link, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); link == fmt.Sprintf("socket:[%d]", ino) {
			n++
		}
	}
	return n
}
