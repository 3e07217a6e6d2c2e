package reference

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unplug-dev/unplug/internal/flow"
	"github.com/unplug-dev/unplug/internal/packet"
)

// tap records every IPv4 packet on the client's veth, both directions (an
// ETH_P_ALL packet socket: outgoing packets reach no other kind), with the
// kernel's timestamp, classified by the same flow tracker unplug's reports
// use.
type tap struct {
	fd      int
	start   time.Time
	stop    atomic.Bool
	done    chan struct{}
	sink    func(ts time.Time, b []byte, size int) // each packet, in order
	mu      sync.Mutex
	packets []Packet
	tracker *flow.Tracker
}

// htons converts a 16-bit protocol number to network byte order.
func htons(v uint16) uint16 { return v<<8 | v>>8 }

// startTap opens the packet socket in the client namespace.
func (l *Lab) startTap(start time.Time) (*tap, error) {
	t := &tap{start: start, tracker: flow.NewTracker(16)}
	t.sink = t.record
	if err := t.open(l.Client, clientIf); err != nil {
		return nil, err
	}
	return t, nil
}

// open binds the packet socket to interface ifname in namespace ns and
// starts handing each packet's headers to t.sink.
func (t *tap) open(ns, ifname string) error {
	t.done = make(chan struct{})
	err := inNetns(ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		t.fd = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("packet socket on %s: %w", ifname, err)
	}
	if err := unix.SetsockoptInt(t.fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		unix.Close(t.fd)
		return fmt.Errorf("packet socket timestamps: %w", err)
	}
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	unix.SetsockoptTimeval(t.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	go t.loop()
	return nil
}

func (t *tap) loop() {
	defer close(t.done)
	buf := make([]byte, 256) // headers are enough: the IP header gives the length
	oob := make([]byte, 128)
	for !t.stop.Load() {
		n, oobn, _, _, err := unix.Recvmsg(t.fd, buf, oob, unix.MSG_TRUNC)
		if err != nil {
			continue // timeout or EINTR: check stop
		}
		ts := time.Now()
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
					ts = time.Unix(int64(native64(m.Data[0:8])), int64(native64(m.Data[8:16])))
				}
			}
		}
		t.sink(ts, buf[:min(n, len(buf))], n)
	}
}

// native64 reads a little-endian 64-bit value (a struct timespec field on
// the machines this runs on: amd64 and arm64).
func native64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

func (t *tap) record(ts time.Time, b []byte, size int) {
	var p packet.Packet
	if err := packet.ParsePrefix(packet.In, b, size, &p); err != nil || !p.IsTCP() {
		return
	}
	if p.Src != ClientAddr {
		p.Dir = packet.Out
	}
	seg := flow.SegmentOf(&p)
	t.mu.Lock()
	defer t.mu.Unlock()
	info := t.tracker.Track(&seg, 0)
	t.packets = append(t.packets, Packet{T: ts.Sub(t.start), Dir: p.Dir.String(), Kind: info.Kind.String(), Seq: info.RelSeq, Len: p.PayloadLen})
}

// close stops the capture and returns the packets in order.
func (t *tap) close() []Packet {
	t.stop.Store(true)
	<-t.done
	unix.Close(t.fd)
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.packets
}
