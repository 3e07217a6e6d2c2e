// Package units reads and writes the byte counts unplug's users type: fault
// rule sizes (queue=, after-bytes=), scenario size parameters (--chunk,
// --warmup) and persona rates (slow-reader:64k). One convention everywhere:
// k, K, M, G (and kB, KB, MB, GB) are decimal SI prefixes, KiB, MiB and GiB
// binary ones, so "1M" is 1,000,000 bytes and "1MiB" is 1,048,576 wherever
// it is written. The package depends only on the standard library.
package units

import (
	"errors"
	"math"
	"strconv"
	"strings"
)

// ErrSize is returned (wrapped in a *SizeError) for text that is not a
// byte count.
var ErrSize = errors.New("not a size")

// SizeError says which text was not a size and shows the accepted forms.
type SizeError struct{ Text string }

// Error implements error.
func (e *SizeError) Error() string {
	return strconv.Quote(e.Text) + " is not a size; use a whole number of bytes with an optional unit: " +
		"65536, 64k or 64kB (×1000), 1M or 1MB, 1G or 1GB, 64KiB (×1024), 1MiB, 1GiB"
}

// Unwrap returns ErrSize.
func (e *SizeError) Unwrap() error { return ErrSize }

// sizeUnits are the suffixes ParseSize accepts, longest first so that "MiB"
// is not read as "B".
var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
	{"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"B", 1},
}

// ParseSize parses a byte count: a non-negative whole number with an
// optional unit, B; k, K, kB or KB (1000); M or MB (10⁶); G or GB (10⁹);
// KiB (1024), MiB (2²⁰) or GiB (2³⁰). Space between number and unit is
// allowed ("64 KiB").
func ParseSize(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range sizeUnits {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult || (num != "" && num[0] == '+') {
		return 0, &SizeError{Text: s}
	}
	return n * mult, nil
}

// FormatSize writes n the way ParseSize reads it back: with the largest
// binary unit that divides it exactly (64KiB, 1MiB), unless n is a round
// decimal number (a multiple of 1000), which is written plain (1000,
// 2000000000), as is anything else (1500). Binary units because socket
// buffers, windows and chunk sizes are usually powers of two; never an SI
// unit, so the output cannot be mistaken for the other convention.
func FormatSize(n int64) string {
	if n%1000 == 0 {
		return strconv.FormatInt(n, 10)
	}
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}
