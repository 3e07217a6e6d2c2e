package main

import (
	"os"
	"runtime"
	"testing"
)

func TestPeerProcs(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  string // "" unsets GOMAXPROCS
		want int    // 0: unchanged
	}{
		{"half the CPUs by default", "", max(1, runtime.NumCPU()/2)},
		{"the environment wins", "3", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := runtime.GOMAXPROCS(0)
			t.Cleanup(func() { runtime.GOMAXPROCS(before) })
			t.Setenv("GOMAXPROCS", tc.env)
			if tc.env == "" {
				os.Unsetenv("GOMAXPROCS")
			}
			// A value of its own, to see whether peerProcs changes it.
			runtime.GOMAXPROCS(before + 1)
			peerProcs()
			want := tc.want
			if want == 0 {
				want = before + 1
			}
			if got := runtime.GOMAXPROCS(0); got != want {
				t.Fatalf("GOMAXPROCS = %d, want %d", got, want)
			}
		})
	}
}
