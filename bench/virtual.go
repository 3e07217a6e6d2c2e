package bench

import (
	"fmt"
	"time"

	"github.com/unplug-dev/unplug/internal/vlink"
)

// virtualTimeout runs, in virtual time, a connection whose every packet is
// dropped right after a request is written, until gVisor gives up (about
// 18 simulated minutes), runs times, and returns the simulated and the wall
// time it took, set-up included.
func virtualTimeout(runs int) (simulated, wall time.Duration, err error) {
	start := time.Now()
	for range runs {
		d, err := virtualTimeoutOnce()
		if err != nil {
			return 0, 0, err
		}
		simulated += d
	}
	return simulated, time.Since(start), nil
}

func virtualTimeoutOnce() (time.Duration, error) {
	p, err := vlink.NewPair(vlink.PairOptions{Seed: 1})
	if err != nil {
		return 0, err
	}
	defer p.Close()
	l, err := p.Listen(80)
	if err != nil {
		return 0, err
	}
	defer l.Close()
	c, err := p.Connect(vlink.PeerAddr4.String(), 80, time.Minute)
	if err != nil {
		return 0, err
	}
	if err := p.RunUntil(func() bool {
		_, err := l.Accept()
		return err == nil
	}, time.Minute); err != nil {
		return 0, fmt.Errorf("virtual time: accept: %w", err)
	}
	if _, err := p.Faults.AddString("drop"); err != nil {
		return 0, err
	}
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: peer\r\n\r\n")); err != nil {
		return 0, fmt.Errorf("virtual time: write: %w", err)
	}
	if err := p.RunUntil(func() bool { return c.Err() != nil }, 2*time.Hour); err != nil {
		return 0, fmt.Errorf("virtual time: wait for the timeout: %w", err)
	}
	return p.Now(), nil
}
