//go:build !linux

package services

import "io"

// copyForward copies src to dst for a forward (copyAdaptive; on Linux
// from a client straight out of gVisor's receive buffers).
func copyForward(dst io.Writer, src io.Reader) (int64, error) {
	return copyAdaptive(dst, src)
}
