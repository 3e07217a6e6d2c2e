package bench

import (
	"io"
	"time"
)

// Options configure a benchmark run. The zero value is the full run at
// default settings; Quick shrinks every size for a first look or a CI smoke.
type Options struct {
	// Quick runs short transfers, few round trips and few connections.
	Quick bool
	// Duration is how long each bulk transfer sends; 0 picks 2 s (Quick: 300 ms).
	Duration time.Duration
	// Rounds is how many times each bulk pair (unplug, baseline) is
	// repeated, interleaved; the medians are reported. 0 picks 5 (Quick: 1).
	Rounds int
	// PingPongs is the number of 1-byte round trips per latency sample set;
	// 0 picks 20000 (Quick: 500).
	PingPongs int
	// Conns is the number of idle connections the peer holds; 0 picks
	// 10000 (Quick: 200).
	Conns int
	// Starts is how many times serve's start-up is timed; 0 picks 5 (Quick: 1).
	Starts int
	// MTU is the TUN's MTU; 0 means tun.DefaultMTU (1500).
	MTU int
	// NoOffload uses the plain TUN device (one packet per system call,
	// no virtio-net header) instead of the offload device.
	NoOffload bool
	// ServeCommand starts `unplug serve` (the benchmark appends its flags);
	// nil times an in-process start of the same parts instead.
	ServeCommand []string
	// Toxiproxy is the toxiproxy-server binary the forwarding rows compare
	// against; "" looks for toxiproxy-server on PATH (the rows are skipped
	// when there is none).
	Toxiproxy string
	// Only, when not empty, restricts the run to the named rows (RowBulk...).
	Only []string
	// Progress receives a line as each measurement starts; nil discards.
	Progress io.Writer
}

// withDefaults fills the zero fields.
func (o Options) withDefaults() Options {
	pick := func(v *int, full, quick int) {
		if *v == 0 {
			*v = full
			if o.Quick {
				*v = quick
			}
		}
	}
	if o.Duration == 0 {
		o.Duration = 2 * time.Second
		if o.Quick {
			o.Duration = 300 * time.Millisecond
		}
	}
	pick(&o.Rounds, 5, 1)
	pick(&o.PingPongs, 20000, 500)
	pick(&o.Conns, 10000, 200)
	pick(&o.Starts, 5, 1)
	if o.MTU == 0 {
		o.MTU = 1500
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return o
}

// wants reports whether row is selected by Only.
func (o Options) wants(row string) bool {
	if len(o.Only) == 0 {
		return true
	}
	for _, r := range o.Only {
		if r == row {
			return true
		}
	}
	return false
}
