package errno_test

import (
	"errors"
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/unplug-dev/unplug/internal/errno"
)

func ExampleOf() {
	fmt.Println(errno.Of(&tcpip.ErrTimeout{}))
	fmt.Println(errno.Of(&tcpip.ErrAborted{})) // a RST in CLOSE-WAIT: EPIPE, as on Linux
	err := fmt.Errorf("read: %w", errno.Of(&tcpip.ErrConnectionReset{}))
	fmt.Println(errors.Is(err, errno.ECONNRESET))
	// Output:
	// ETIMEDOUT
	// EPIPE
	// true
}
