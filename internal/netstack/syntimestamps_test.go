package netstack

import (
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestTSvalOffset finds the timestamp option's TSval among a SYN's
// options, and nothing in segments without one or with broken options.
func TestTSvalOffset(t *testing.T) {
	mss := []byte{2, 4, 0x05, 0xb4}
	ts := []byte{8, 10, 1, 2, 3, 4, 0, 0, 0, 0}
	for _, tc := range []struct {
		name string
		opts []byte
		want int // offset in the segment; -1 none
	}{
		{"none", nil, -1},
		{"gVisor's SYN-ACK: MSS, NOP NOP TS, NOP WS", cat(mss, []byte{1, 1}, ts, []byte{1, 3, 3, 7}), 20 + 4 + 2 + 2},
		{"Linux's SYN: MSS, SACK-permitted, TS, NOP, WS", cat(mss, []byte{4, 2}, ts, []byte{1, 3, 3, 7}), 20 + 6 + 2},
		{"after the end of the options", cat(mss, []byte{0, 0, 0, 0}, ts, []byte{0, 0}), -1},
		{"a zero option length", cat([]byte{3, 0, 0, 0}, ts, []byte{0, 0}), -1},
		{"an option running past the header", cat(mss, []byte{8, 10, 1, 2}), -1},
		{"no TS, only MSS and WS", cat(mss, []byte{1, 3, 3, 7}), -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seg := make(header.TCP, header.TCPMinimumSize+len(tc.opts))
			copy(seg[header.TCPMinimumSize:], tc.opts)
			seg.Encode(&header.TCPFields{DataOffset: uint8(len(seg)), Flags: header.TCPFlagSyn | header.TCPFlagAck})
			if got := tsvalOffset(seg); got != tc.want {
				t.Errorf("tsvalOffset = %d, want %d", got, tc.want)
			}
		})
	}
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}
