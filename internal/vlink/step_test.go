package vlink

import (
	"bytes"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/stack/fault"
)

// TestStepper scripts a stepping session through the timeout: it must stop
// at every event until told otherwise, honour "n N" and "c", show gVisor's
// retransmit timer and the client's RTO, and virtual time must not move
// while it waits for a command.
func TestStepper(t *testing.T) {
	var st *Stepper
	p := newPair(t, PairOptions{Observer: fault.ObserverFunc(func(ev *fault.Event) {
		if st != nil {
			st.Observer().Observe(ev)
		}
	})})
	c, _ := establish(t, p)
	var out bytes.Buffer
	script := "\ns\nhelp\nn 3\n\nc\n"
	st = NewStepper(p, strings.NewReader(script), &out)
	st.Attach()
	p.Faults.AddString("drop")
	if _, err := c.Write([]byte(request)); err != nil {
		t.Fatal(err)
	}
	if err := p.RunUntil(func() bool { return c.Err() != nil }, time.Hour); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	// Stops: #1 Enter, #2 s, #3 help (re-prompts) then n 3, #6 Enter, #7 c.
	if got := st.Stops(); got != 5 {
		t.Errorf("stopped %d times, want 5:\n%s", got, text)
	}
	for _, want := range []string{"packet client→peer", "dropped by rule 1", "timer tcp.(*sender).retransmitTimerExpired", "commands:", "rto"} {
		if !strings.Contains(text, want) {
			t.Errorf("stepper output lacks %q:\n%s", want, text)
		}
	}
	if n := strings.Count(text, "retransmitTimerExpired"); n != 15 {
		t.Errorf("retransmit timer shown %d times, want 15", n)
	}
}

// TestStepperFreezesTime holds the stepper at its first stop and checks that
// neither virtual time nor the packet count moves until a command arrives.
func TestStepperFreezesTime(t *testing.T) {
	var st *Stepper
	var packets atomic.Int64
	p := newPair(t, PairOptions{Observer: fault.ObserverFunc(func(ev *fault.Event) {
		packets.Add(1)
		if st != nil {
			st.Observer().Observe(ev)
		}
	})})
	c, _ := establish(t, p)
	cmds, feed := io.Pipe()
	var out lockedBuffer
	st = NewStepper(p, cmds, &out)
	st.Attach()
	p.Faults.AddString("drop")
	done := make(chan error, 1)
	go func() {
		if _, err := c.Write([]byte(request)); err != nil {
			done <- err
			return
		}
		done <- p.RunUntil(func() bool { return c.Err() != nil }, time.Hour)
	}()
	for !strings.Contains(out.String(), "step> ") {
		runtime.Gosched()
	}
	now, seen := p.Clock.Elapsed(), packets.Load()
	for range 20 {
		time.Sleep(5 * time.Millisecond) // real time passes; virtual time must not
		if p.Clock.Elapsed() != now || packets.Load() != seen {
			t.Fatalf("moved while stopped: %v → %v, packets %d → %d", now, p.Clock.Elapsed(), seen, packets.Load())
		}
	}
	io.WriteString(feed, "c\n")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if p.Clock.Elapsed() <= now {
		t.Fatal("virtual time did not advance after continuing")
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
