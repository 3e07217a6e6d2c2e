package tun

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// safetyTimeout bounds waits that should finish at once; it guards against
// hangs and is never asserted on.
const safetyTimeout = 30 * time.Second

// stageEnv tells a re-executed test binary which stage of a multi-process
// test it is.
const stageEnv = "UNPLUG_TUN_TEST_STAGE"

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and TUN devices")
	}
}

// newTestNamespace starts a namespace that the test's cleanup closes.
func newTestNamespace(t *testing.T, cfg NamespaceConfig) *Namespace {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
	defer cancel()
	ns, err := NewNamespace(ctx, cfg)
	if err != nil {
		t.Fatalf("NewNamespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// awaitPacket reads dev until match accepts a packet and returns a copy.
func awaitPacket(t *testing.T, dev Device, match func([]byte) bool) []byte {
	t.Helper()
	type result struct {
		pkt []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		buf := make([]byte, dev.MTU())
		for {
			n, err := dev.Read(buf)
			if err != nil {
				ch <- result{err: err}
				return
			}
			if match(buf[:n]) {
				ch <- result{pkt: bytes.Clone(buf[:n])}
				return
			}
		}
	}()
	timer := time.NewTimer(safetyTimeout)
	defer timer.Stop()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("read %s: %v", dev.Name(), r.err)
		}
		return r.pkt
	case <-timer.C:
		dev.Close()
		<-ch
		t.Fatalf("no matching packet on %s", dev.Name())
		return nil
	}
}

// udpPacket is a parsed IPv4 or IPv6 UDP datagram.
type udpPacket struct {
	src, dst netip.AddrPort
	payload  []byte
}

// parseUDP decodes an IP packet carrying UDP (no IPv6 extension headers).
func parseUDP(p []byte) (udpPacket, bool) {
	if len(p) < 1 {
		return udpPacket{}, false
	}
	var src, dst netip.Addr
	var l4 []byte
	switch p[0] >> 4 {
	case 4:
		ihl := int(p[0]&0x0f) * 4
		if len(p) < ihl+8 || p[9] != unix.IPPROTO_UDP {
			return udpPacket{}, false
		}
		src, dst = netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
		l4 = p[ihl:]
	case 6:
		if len(p) < 48 || p[6] != unix.IPPROTO_UDP {
			return udpPacket{}, false
		}
		src, dst = netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
		l4 = p[40:]
	default:
		return udpPacket{}, false
	}
	return udpPacket{
		src:     netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:2])),
		dst:     netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:4])),
		payload: l4[8:],
	}, true
}

// ipv4UDP builds an IPv4 UDP datagram (UDP checksum 0, which IPv4 allows).
func ipv4UDP(src, dst netip.AddrPort, payload []byte) []byte {
	total := 20 + 8 + len(payload)
	p := make([]byte, total)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(total))
	p[8] = 64
	p[9] = unix.IPPROTO_UDP
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], ipChecksum(p[:20]))
	binary.BigEndian.PutUint16(p[20:], src.Port())
	binary.BigEndian.PutUint16(p[22:], dst.Port())
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	return p
}

// ipChecksum is the Internet checksum of a header.
func ipChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// inStage reports whether this process is the given stage of the current
// test; the top-level run (no stage) gets false.
func inStage(stage string) bool { return os.Getenv(stageEnv) == stage }

// childPIDs lists this process's child processes.
func childPIDs(t *testing.T) map[string]bool {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	pids := map[string]bool{}
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/children")
		if err != nil {
			continue
		}
		for _, pid := range strings.Fields(string(b)) {
			pids[pid] = true
		}
	}
	return pids
}
