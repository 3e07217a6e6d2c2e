package sockdiag

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var update = flag.Bool("update", false, "capture testdata/dump.bin and dump.json from the running kernel")

// TestCaptureDump records the netlink replies of a real dump, and what the
// sockets are known to be from other sources (getsockname, fstat,
// getsockopt TCP_INFO), for TestParseCanned. It runs only with -update.
func TestCaptureDump(t *testing.T) {
	if !*update {
		t.Skip("run with -update to capture testdata from the kernel")
	}
	requireRoot(t)
	ns := newTestNamespace(t, nil)
	d := newDumper(t, ns)
	var want cannedDump
	var socks []rawSock
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		l := listen(t, ns, addr)
		c := dial(t, ns, l.local(t), sockOpts{keepalive: true, idle: 7, intvl: 3, cnt: 4}, false)
		srv := accept(t, ns, l)
		socks = append(socks, l, c, srv)
	}
	var bin []byte
	d.tap = func(b []byte) {
		bin = binary.NativeEndian.AppendUint32(bin, uint32(len(b)))
		bin = append(bin, b...)
	}
	if _, err := d.Dump(); err != nil {
		t.Fatal(err)
	}
	want.Seqs = []uint32{d.seq - 1, d.seq}
	for i, s := range socks {
		cs := cannedSocket{Src: s.local(t).String(), Inode: inodeOf(t, s)}
		s.control(func(fd int) error {
			if sa, err := unix.Getpeername(fd); err == nil {
				cs.Dst = addrOf(sa).String()
			}
			ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
			if err != nil {
				return err
			}
			cs.InfoState, cs.RTO, cs.SndMSS, cs.AdvMSS, cs.PMTU = ti.State, ti.Rto, ti.Snd_mss, ti.Advmss, ti.Pmtu
			return nil
		})
		switch i % 3 {
		case 0:
			cs.State, cs.Timer = StateListen, TimerNone
		case 1:
			cs.State, cs.Timer = StateEstablished, TimerKeepalive
		case 2:
			cs.State, cs.Timer = StateEstablished, TimerNone
		}
		want.Sockets = append(want.Sockets, cs)
	}
	want.Captured = time.Now().UTC().Format(time.RFC3339)
	var uts unix.Utsname
	unix.Uname(&uts)
	want.Kernel = unix.ByteSliceToString(uts.Release[:])
	js, err := json.MarshalIndent(want, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll("testdata", 0o755)
	if err := os.WriteFile(filepath.Join("testdata", "dump.bin"), bin, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", "dump.json"), append(js, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}
