package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"time"
)

// iperfPort is where the iperf3 server listens on the namespace's loopback
// and where the peer forwards from.
const iperfPort = 5201

// iperf3Path finds iperf3, or explains how to get it.
func iperf3Path() (string, error) {
	p, err := exec.LookPath("iperf3")
	if err != nil {
		return "", fmt.Errorf("%w: iperf3 not found; install it (apt-get install iperf3) for this row", errSkipped)
	}
	return p, nil
}

// iperfServer runs `iperf3 -s` on the namespace's loopback until the
// returned stop is called, and waits until it accepts connections.
func iperfServer(ctx context.Context, e *env, bin string) (stop func(), err error) {
	runCtx, cancel := context.WithCancel(ctx)
	exited := make(chan error, 1)
	var out limitedBuffer
	go func() {
		_, err := e.ns.Run(runCtx, nil, &out, &out, []string{bin, "-s", "-B", "127.0.0.1", "-p", strconv.Itoa(iperfPort)})
		exited <- err
	}()
	stop = func() {
		cancel()
		<-exited
	}
	addr := fmt.Sprintf("127.0.0.1:%d", iperfPort)
	err = waitFor(ctx, 10*time.Second, func() bool {
		select {
		case err := <-exited:
			exited <- err
			return true
		default:
		}
		c, err := e.dial(ctx, addr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	select {
	case xerr := <-exited:
		exited <- xerr
		err = fmt.Errorf("iperf3 server exited: %v: %s", xerr, out.String())
	default:
	}
	if err != nil {
		stop()
		return nil, fmt.Errorf("iperf3 server: %w", err)
	}
	return stop, nil
}

// iperfClient runs `iperf3 -c host` inside the namespace for d and returns
// the bytes per second the server received.
func iperfClient(ctx context.Context, e *env, bin, host string, d time.Duration) (float64, error) {
	secs := max(1, int(d/time.Second))
	var out, errOut limitedJSON
	code, err := e.ns.Run(ctx, nil, &out, &errOut, []string{bin, "-c", host, "-p", strconv.Itoa(iperfPort), "-t", strconv.Itoa(secs), "-J"})
	if err != nil {
		return 0, fmt.Errorf("iperf3 -c %s: %w", host, err)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal(out.b, &res); jerr != nil || code != 0 || res.Error != "" {
		return 0, fmt.Errorf("iperf3 -c %s: exit %d: %s%s", host, code, res.Error, errOut.b)
	}
	if res.End.SumReceived.BitsPerSecond == 0 {
		return 0, errors.New("iperf3 reported no throughput")
	}
	return res.End.SumReceived.BitsPerSecond / 8, nil
}

// limitedJSON collects a program's output, up to 1 MiB.
type limitedJSON struct{ b []byte }

// Write implements io.Writer; it never fails.
func (l *limitedJSON) Write(p []byte) (int, error) {
	if room := 1<<20 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}
