package scenarios

import (
	"bufio"
	"compress/gzip"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

var hzOnce struct {
	sync.Once
	hz   int
	from string
}

// hostHZ returns the kernel's CONFIG_HZ: the resolution of
// CLOCK_MONOTONIC_COARSE is one jiffy (TICK_NSEC), readable by anyone;
// /proc/config.gz confirms it where present.
func hostHZ() int {
	hz, _ := hostHZFrom()
	return hz
}

// hostHZFrom is hostHZ and where the value came from.
func hostHZFrom() (int, string) {
	hzOnce.Do(func() {
		var ts unix.Timespec
		if err := unix.ClockGetres(unix.CLOCK_MONOTONIC_COARSE, &ts); err == nil && ts.Nano() > 0 {
			hzOnce.hz = int((1e9 + ts.Nano()/2) / ts.Nano())
			hzOnce.from = "CLOCK_MONOTONIC_COARSE resolution"
		}
		if hz := configHZ(); hz > 0 {
			if hzOnce.hz == 0 || hzOnce.hz == hz {
				hzOnce.hz, hzOnce.from = hz, strings.TrimPrefix(hzOnce.from+" and /proc/config.gz", " and ")
			}
		}
		if hzOnce.hz == 0 {
			hzOnce.hz, hzOnce.from = defaultHZ, "assumed"
		}
	})
	return hzOnce.hz, hzOnce.from
}

// configHZ reads CONFIG_HZ from /proc/config.gz (0 if absent).
func configHZ() int {
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		return 0
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(zr)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CONFIG_HZ="); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}
