package stack

import (
	"context"
	"errors"
	"sync"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/unplug-dev/unplug/tun"
)

// outboundQueue is how many packets the peer may queue towards the device
// before the link drops (like a full NIC ring).
const outboundQueue = 4096

// deviceLink is the link endpoint on a tun.Device: a channel endpoint whose
// inbound side is fed by a read loop and whose outbound queue is drained by a
// write loop, so gVisor never blocks on the device (the iobased pattern).
type deviceLink struct {
	*channel.Endpoint
	dev    tun.Device
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	errs   chan error
}

func newDeviceLink(dev tun.Device) *deviceLink {
	return &deviceLink{
		Endpoint: channel.New(outboundQueue, uint32(dev.MTU()), ""),
		dev:      dev,
		errs:     make(chan error, 2),
	}
}

// start runs the read and write loops until stop.
func (l *deviceLink) start() {
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	l.wg.Add(2)
	go l.readLoop()
	go l.writeLoop(ctx)
}

func (l *deviceLink) readLoop() {
	defer l.wg.Done()
	buf := make([]byte, l.dev.MTU()+64)
	for {
		n, err := l.dev.Read(buf)
		if err != nil {
			if !errors.Is(err, tun.ErrClosed) {
				l.errs <- err
			}
			return
		}
		if n == 0 {
			continue
		}
		var proto tcpip.NetworkProtocolNumber
		switch header.IPVersion(buf[:n]) {
		case header.IPv4Version:
			proto = header.IPv4ProtocolNumber
		case header.IPv6Version:
			proto = header.IPv6ProtocolNumber
		default:
			continue
		}
		pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{
			Payload: buffer.MakeWithData(buf[:n]),
		})
		l.InjectInbound(proto, pkt)
		pkt.DecRef()
	}
}

func (l *deviceLink) writeLoop(ctx context.Context) {
	defer l.wg.Done()
	buf := make([]byte, 0, l.dev.MTU()+64)
	for {
		pkt := l.ReadContext(ctx)
		if pkt == nil {
			return
		}
		buf = buf[:0]
		for _, s := range pkt.AsSlices() {
			buf = append(buf, s...)
		}
		pkt.DecRef()
		if _, err := l.dev.Write(buf); err != nil && errors.Is(err, tun.ErrClosed) {
			return
		}
	}
}

// stop closes the device and joins both loops.
func (l *deviceLink) stop() error {
	var err error
	l.once.Do(func() {
		if l.cancel != nil {
			l.cancel()
		}
		err = l.dev.Close()
		l.wg.Wait()
		l.Endpoint.Close()
	})
	return err
}
