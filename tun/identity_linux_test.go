package tun

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestUIDMap(t *testing.T) {
	tests := []struct {
		name    string
		uidMap  string
		initial bool
		id      int
		outside int
		mapped  bool
	}{
		{"initial namespace", "         0          0 4294967295\n", true, 65534, 65534, true},
		{"rootless podman, root", "         0       1001          1\n         1     100000      65536\n", false, 0, 1001, true},
		{"rootless podman, nobody", "         0       1001          1\n         1     100000      65536\n", false, 65534, 165533, true},
		{"unmapped", "         0       1001          1\n", false, 65534, 0, false},
		{"unreadable", "", true, 7, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "uid_map")
			if tt.uidMap != "" {
				if err := os.WriteFile(path, []byte(tt.uidMap), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			m := readUIDMap(path)
			if got := initialUserns(m); got != tt.initial {
				t.Errorf("initialUserns = %v, want %v", got, tt.initial)
			}
			out, ok := outsideID(m, tt.id)
			if ok != tt.mapped || (ok && out != tt.outside) {
				t.Errorf("outsideID(%d) = %d, %v; want %d, %v", tt.id, out, ok, tt.outside, tt.mapped)
			}
		})
	}
}

// effectiveCap agrees with the kernel's own account in /proc/self/status.
func TestEffectiveCapMatchesProcStatus(t *testing.T) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	var eff uint64
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			if eff, err = strconv.ParseUint(strings.TrimSpace(v), 16, 64); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, c := range []int{unix.CAP_NET_ADMIN, unix.CAP_SYS_ADMIN, unix.CAP_SYS_RESOURCE, unix.CAP_BPF} {
		if got, want := effectiveCap(c), eff&(1<<c) != 0; got != want {
			t.Errorf("effectiveCap(%d) = %v, /proc/self/status says %v (CapEff %x)", c, got, want, eff)
		}
	}
}
