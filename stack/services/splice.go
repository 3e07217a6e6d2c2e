package services

import (
	"errors"
	"io"
	"sync"
)

// A forward's copy buffers. Every read and every write of a splice is a
// system call on the kernel side (a read or write on the upstream socket)
// and a pass through gVisor on the other (for the peer's TCP, one write is
// one burst of super-packets), so fewer, larger ones cut the cost per byte:
// a direction that fills its small buffer switches to a large one, and back
// when a read no longer fills even the small one. Idle connections, whose
// last read was small, hold only the small buffer; the large ones are
// shared through a pool.
const (
	spliceSmall = 32 << 10  // what io.Copy uses
	spliceLarge = 256 << 10 // four of the peer's 64 KiB super-packets
)

var spliceBuffers = sync.Pool{New: func() any {
	b := make([]byte, spliceLarge)
	return &b
}}

// copyAdaptive copies src to dst until EOF (nil error) or the first error,
// like io.Copy, with the buffer growing and shrinking with the traffic.
// It never uses src's WriterTo or dst's ReaderFrom: for a kernel socket
// those copy through a fixed 32 KiB buffer of their own.
func copyAdaptive(dst io.Writer, src io.Reader) (int64, error) {
	small := make([]byte, spliceSmall)
	buf := small
	var large *[]byte
	defer func() {
		if large != nil {
			spliceBuffers.Put(large)
		}
	}()
	var written int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			m, werr := dst.Write(buf[:n])
			written += int64(m)
			if werr != nil {
				return written, werr
			}
			if m != n {
				return written, io.ErrShortWrite
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return written, nil
			}
			return written, rerr
		}
		switch {
		case large == nil && n == len(small):
			large = spliceBuffers.Get().(*[]byte)
			buf = *large
		case large != nil && n < len(small):
			spliceBuffers.Put(large)
			large, buf = nil, small
		}
	}
}
