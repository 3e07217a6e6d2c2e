package busypoll

import (
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// oneP runs the test with one P, where a spinning goroutine would starve
// the network poller if the spinner did not park for it.
func oneP(t *testing.T) {
	prev := runtime.GOMAXPROCS(1)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
}

func start(t *testing.T, window time.Duration) {
	stop, err := Start(window)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
}

// echoPair returns a client connection to a kernel TCP echo server on
// loopback.
func echoPair(t *testing.T) net.Conn {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRoundTripsWhileSpinning runs round trips whose reads, like the
// peer's, Touch the poller, and checks that every one completes (the
// network poller is reached while the spinner spins), that the spinner
// spun and parked for the events, and that timers still fire.
func TestRoundTripsWhileSpinning(t *testing.T) {
	oneP(t)
	start(t, 5*time.Millisecond)
	c := echoPair(t)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	timer := time.After(2 * time.Millisecond)
	fired := false
	b := []byte{0}
	for i := range 2000 {
		b[0] = byte(i)
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatalf("round trip %d: %v", i, err)
		}
		Touch(len(b))
		if b[0] != byte(i) {
			t.Fatalf("round trip %d: got %d", i, b[0])
		}
		select {
		case <-timer:
			fired = true
		default:
		}
	}
	st := Counters()
	if st == nil {
		t.Fatal("no counters while running")
	}
	if st.Windows.Load() == 0 || st.Polls.Load() == 0 || st.Parks.Load() == 0 {
		t.Errorf("windows %d, polls %d, parks %d; want all > 0", st.Windows.Load(), st.Polls.Load(), st.Parks.Load())
	}
	// The round trips took far longer than 2 ms on any machine, so a
	// timer that never fired was starved by the spinner.
	if !fired {
		select {
		case <-timer:
		default:
			t.Error("a 2 ms timer did not fire during the spinning round trips")
		}
	}
}

// TestUntouchedDescriptorsAreServed checks that a read nobody Touches
// (a descriptor off the data path, like the control socket) still
// completes while the spinner spins for other traffic.
func TestUntouchedDescriptorsAreServed(t *testing.T) {
	oneP(t)
	start(t, 5*time.Millisecond)
	quiet := echoPair(t)
	quiet.SetDeadline(time.Now().Add(10 * time.Second))
	got := make(chan error, 1)
	go func() {
		b := make([]byte, 5)
		_, err := io.ReadFull(quiet, b)
		got <- err
	}()
	stopTouch := make(chan struct{})
	touched := make(chan struct{})
	go func() { // traffic elsewhere keeps the spinner spinning
		defer close(touched)
		for {
			select {
			case <-stopTouch:
				return
			default:
			}
			Touch(1)
			runtime.Gosched()
		}
	}()
	t.Cleanup(func() { close(stopTouch); <-touched })
	time.Sleep(time.Millisecond)
	if _, err := quiet.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("the untouched read: %v", err)
	}
}

// TestIdleStopsSpinning checks that without traffic the spinner stops
// polling once its window has passed, that a second Start shares the
// poller, and that it ends with the last stop.
func TestIdleStopsSpinning(t *testing.T) {
	stop, err := Start(200 * time.Microsecond)
	if err != nil {
		t.Fatal(err)
	}
	stop2, err := Start(time.Millisecond)
	if err != nil {
		t.Fatalf("a second Start: %v", err)
	}
	if w := Window(); w != 200*time.Microsecond {
		t.Errorf("window %s after the second Start, want the first's 200µs", w)
	}
	stop2()
	stop2()
	Touch(smallRead + 1) // bulk data starts no window
	time.Sleep(5 * time.Millisecond)
	if w := Counters().Windows.Load(); w != 0 {
		t.Errorf("a bulk read started %d windows", w)
	}
	if Counters() == nil {
		t.Fatal("the first Start's poller ended with the second's stop")
	}
	st := Counters()
	Touch(1)
	time.Sleep(20 * time.Millisecond)
	polls := st.Polls.Load()
	time.Sleep(20 * time.Millisecond)
	if now := st.Polls.Load(); now != polls {
		t.Errorf("the spinner polled %d times in 20 ms without traffic", now-polls)
	}
	if st.Windows.Load() == 0 {
		t.Error("the Touch started no window")
	}
	stop()
	stop()
	if Counters() != nil {
		t.Error("counters after stop")
	}
	if _, err := Start(0); err != nil {
		t.Errorf("Start(0): %v", err)
	}
	if Counters() != nil {
		t.Error("Start(0) started a poller")
	}
}

// TestRuntimeEpoll checks that the descriptor found is an epoll set that
// a pipe registered with the runtime's poller is in.
func TestRuntimeEpoll(t *testing.T) {
	a, err := runtimeEpoll()
	if err != nil {
		t.Fatal(err)
	}
	b, err := runtimeEpoll()
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Errorf("two lookups found %d and %d", a, b)
	}
}
