package vlink

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

func TestClockOrder(t *testing.T) {
	c := NewClock()
	var got []string
	at := func(name string) func() {
		return func() { got = append(got, name+"@"+c.Elapsed().String()) }
	}
	c.AfterFunc(3*time.Second, at("c"))
	c.AfterFunc(time.Second, at("a1"))
	c.AfterFunc(2*time.Second, at("b"))
	c.AfterFunc(time.Second, at("a2")) // same deadline as a1: arming order decides
	c.AfterFunc(-time.Second, at("now"))
	c.AfterFunc(time.Second, func() {
		got = append(got, "chain@"+c.Elapsed().String())
		c.AfterFunc(0, at("chained")) // armed for the current instant while firing
	})
	stopped := c.AfterFunc(time.Second, at("stopped"))
	moved := c.AfterFunc(time.Second, at("moved"))

	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop must report true once for an armed timer, then false")
	}
	moved.Reset(2500 * time.Millisecond)
	if n := c.Pending(); n != 7 {
		t.Fatalf("Pending = %d, want 7", n)
	}
	if next, ok := c.Next(); !ok || next != 0 {
		t.Fatalf("Next = %v, %v; want 0 (the zero-length timer)", next, ok)
	}
	if len(got) != 0 {
		t.Fatalf("timers fired before the clock moved: %v", got)
	}

	c.AdvanceTo(10 * time.Second)
	want := []string{"now@0s", "a1@1s", "a2@1s", "chain@1s", "chained@1s", "b@2s", "moved@2.5s", "c@3s"}
	if !slices.Equal(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	if c.Elapsed() != 10*time.Second || c.Pending() != 0 || c.Fired() != 8 {
		t.Fatalf("after AdvanceTo(10s): elapsed %v, pending %d, fired %d", c.Elapsed(), c.Pending(), c.Fired())
	}
	if _, ok := c.Next(); ok {
		t.Fatal("Next reports a timer on an empty clock")
	}
	c.AdvanceTo(time.Second)
	if c.Elapsed() != 10*time.Second {
		t.Fatalf("time went backwards to %v", c.Elapsed())
	}
	if !c.Now().Equal(Epoch.Add(10*time.Second)) || c.NowMonotonic().Sub(tcpip.MonotonicTime{}) != monoBase+10*time.Second {
		t.Fatalf("Now %v, NowMonotonic %v", c.Now(), c.NowMonotonic())
	}
}

func TestClockResetFired(t *testing.T) {
	c := NewClock()
	n := 0
	tm := c.AfterFunc(time.Second, func() { n++ })
	c.AdvanceTo(time.Second)
	if tm.Stop() {
		t.Error("Stop of a fired timer reported true")
	}
	tm.Reset(time.Second)
	tm.Reset(time.Second) // re-arming an armed timer moves it, never duplicates it
	if c.Pending() != 1 {
		t.Fatalf("Pending = %d after two Resets, want 1", c.Pending())
	}
	c.AdvanceTo(5 * time.Second)
	if n != 2 {
		t.Fatalf("fired %d times, want 2", n)
	}
	if c.FireNext(time.Hour) {
		t.Fatal("FireNext fired on an empty clock")
	}
}

func TestClockConcurrentArming(t *testing.T) {
	c := NewClock()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				tm := c.AfterFunc(time.Duration(g*100+i)*time.Millisecond, func() {})
				if i%2 == 0 {
					tm.Stop()
				}
			}
		})
	}
	wg.Wait()
	if c.Pending() != 400 {
		t.Fatalf("Pending = %d, want 400", c.Pending())
	}
	prev := time.Duration(-1)
	for c.FireNext(time.Hour) {
		if c.Elapsed() < prev {
			t.Fatal("timers fired out of order")
		}
		prev = c.Elapsed()
	}
}

type ticker struct{}

func (*ticker) tick() {}

func TestTimerName(t *testing.T) {
	c := NewClock()
	var names []string
	c.OnFire(func(name string) { names = append(names, name) })
	c.AfterFunc(0, (&ticker{}).tick)
	c.AfterFunc(0, func() {})
	c.AdvanceTo(0)
	c.OnFire(nil)
	c.AfterFunc(0, func() {})
	c.AdvanceTo(0)

	want := []string{
		"github.com/unplug-dev/unplug/internal/vlink.(*ticker).tick",
		"github.com/unplug-dev/unplug/internal/vlink.TestTimerName.func",
	}
	if len(names) != 2 || names[0] != want[0] || !strings.HasPrefix(names[1], want[1]) {
		t.Fatalf("OnFire saw %q, want %q", names, want)
	}
	if TimerName(nil) != "" {
		t.Error("TimerName(nil) is not empty")
	}
}
