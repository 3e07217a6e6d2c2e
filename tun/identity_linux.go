package tun

import (
	"bufio"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Facts about who this process is, for choosing a path and for hints that
// do not mislead: inside a container uid 0 often lacks CAP_SYS_ADMIN, and
// inside a user namespace "run as root" does not help with a file or a
// device that belongs to a uid the namespace does not map.

// procUIDMap is the calling process's uid map.
const procUIDMap = "/proc/self/uid_map"

// effectiveCap reports whether capability c is in this process's effective
// set (in its own user namespace).
func effectiveCap(c int) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[c/32].Effective&(1<<(uint(c)%32)) != 0
}

// canCreateNetns reports whether the process may create a network namespace
// without a new user namespace: it needs CAP_SYS_ADMIN, which uid 0 in a
// container usually lacks.
func canCreateNetns() bool {
	return os.Geteuid() == 0 && effectiveCap(unix.CAP_SYS_ADMIN)
}

// idRange is one line of a uid_map: inside..inside+count-1 maps to
// outside..outside+count-1 in the parent user namespace.
type idRange struct{ inside, outside, count uint64 }

// readUIDMap parses a uid_map file; nil if it cannot be read.
func readUIDMap(path string) []idRange {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var m []idRange
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			continue
		}
		var r idRange
		var errs [3]error
		r.inside, errs[0] = strconv.ParseUint(fields[0], 10, 32)
		r.outside, errs[1] = strconv.ParseUint(fields[1], 10, 32)
		r.count, errs[2] = strconv.ParseUint(fields[2], 10, 33)
		if errs[0] == nil && errs[1] == nil && errs[2] == nil {
			m = append(m, r)
		}
	}
	return m
}

// initialUserns reports whether map is the initial user namespace's
// identity map (0 0 4294967295). An unreadable map counts as initial.
func initialUserns(m []idRange) bool {
	return m == nil || (len(m) == 1 && m[0].inside == 0 && m[0].outside == 0 && m[0].count == 1<<32-1)
}

// outsideID maps id to the parent user namespace through m; ok is false
// when id is not mapped.
func outsideID(m []idRange, id int) (outside int, ok bool) {
	for _, r := range m {
		if uint64(id) >= r.inside && uint64(id)-r.inside < r.count {
			return int(r.outside + uint64(id) - r.inside), true
		}
	}
	return 0, false
}

// inUserns reports whether this process is in a user namespace other than
// the initial one (a rootless or user-namespaced container).
func inUserns() bool { return !initialUserns(readUIDMap(procUIDMap)) }

// overflowUID is the uid the kernel reports for a uid this user namespace
// does not map (kernel.overflowuid, 65534 unless changed).
func overflowUID() int {
	if v, err := strconv.Atoi(readProcValue("/proc/sys/kernel/overflowuid")); err == nil {
		return v
	}
	return 65534
}
