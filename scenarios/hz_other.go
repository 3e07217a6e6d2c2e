//go:build !linux

package scenarios

// hostHZ is defaultHZ off Linux: the kernel model only applies to Linux.
func hostHZ() int { return defaultHZ }

// hostHZFrom is hostHZ and where the value came from.
func hostHZFrom() (int, string) { return defaultHZ, "assumed" }
