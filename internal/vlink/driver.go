package vlink

import (
	"context"
	"errors"
	"math"
	"os"
	"time"
)

// Forever is the limit of a Drive without a deadline.
const Forever = time.Duration(math.MaxInt64)

// ErrIdle is returned by Drive without a limit when nothing could ever make
// its condition true: no timer is armed, so no packet is in flight and no
// timeout can fire.
var ErrIdle = errors.New("would block forever: no timer is pending and nothing is in flight (set a deadline, keepalive or user timeout)")

// Driver runs a Pair for code that blocks: the peer's services (Poll, for
// example a services.Poller's) are polled whenever the stacks have settled,
// then the next timer fires, until a condition holds. Blocking socket
// calls built on it (the scenarios' virtual client, package unplug's
// virtual dialer) return as soon as they can, with virtual time standing
// where they could.
type Driver struct {
	Pair *Pair
	// Poll serves the peer without blocking and reports whether it did
	// anything; nil means nothing serves.
	Poll func() bool
}

// settle lets the pair settle, polling the peer until it is idle.
func (d *Driver) settle() {
	d.Pair.Settle()
	for d.Poll != nil && d.Poll() {
		d.Pair.Settle()
	}
}

// Once does one instant of Drive: it settles (polling the peer) and, unless
// done holds, fires the timers of the next instant up to limit. It reports
// whether done held; at limit it leaves the clock there and returns
// os.ErrDeadlineExceeded, and with limit Forever and no timer armed it
// returns ErrIdle.
func (d *Driver) Once(done func() bool, limit time.Duration) (bool, error) {
	d.settle()
	if done() {
		return true, nil
	}
	if next, ok := d.Pair.Clock.Next(); ok && next <= limit {
		d.Pair.Step()
		return false, nil
	}
	if limit == Forever {
		return false, ErrIdle
	}
	d.Pair.AdvanceTo(limit)
	d.settle()
	if done() {
		return true, nil
	}
	return false, os.ErrDeadlineExceeded
}

// Drive runs the pair until done holds (checked after every settled
// instant), limit (virtual time since the pair was built) passes
// (os.ErrDeadlineExceeded, the clock then stands at limit), nothing can
// happen any more (ErrIdle, only with limit Forever), or ctx ends.
func (d *Driver) Drive(ctx context.Context, done func() bool, limit time.Duration) error {
	for {
		ok, err := d.Once(done, limit)
		if ok || err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}
