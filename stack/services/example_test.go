package services_test

import (
	"fmt"

	"github.com/unplug-dev/unplug/stack/services"
)

// ExampleDefaultConfig lists the ports of the peer's built-in services, as
// stack.Options.Services (and unplug serve) start them by default.
func ExampleDefaultConfig() {
	c := services.DefaultConfig()
	fmt.Println("http", c.HTTP, "echo", c.Echo, "discard", c.Discard, "sink", c.Sink, "source", c.Source)
	// Output: http 80 echo 7 discard 9 sink 5001 source 5002
}
