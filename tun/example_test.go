package tun_test

import (
	"fmt"

	"github.com/unplug-dev/unplug/tun"
)

// ExampleNewMemoryPair joins two in-memory devices: a packet written to one
// is read from the other, as a TUN device carries the kernel's packets. A
// test gives one end to stack.New and plays the client on the other.
func ExampleNewMemoryPair() {
	peerEnd, clientEnd := tun.NewMemoryPair(1500)
	defer peerEnd.Close()
	defer clientEnd.Close()
	if _, err := clientEnd.Write([]byte{0x45, 0, 0, 20}); err != nil {
		fmt.Println(err)
		return
	}
	b := make([]byte, peerEnd.MTU())
	n, err := peerEnd.Read(b)
	fmt.Printf("% x %v\n", b[:n], err)
	// Output: 45 00 00 14 <nil>
}
