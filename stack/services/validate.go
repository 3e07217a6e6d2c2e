package services

import "fmt"

// Validate reports the first problem with cfg's ports and forwards (a port
// out of range, two services or forwards on one port, a malformed target)
// without starting anything, so a command line can be rejected before any
// device or socket exists. Start checks the same.
func (c Config) Validate() error {
	_, err := plan(c)
	return err
}

// PortError is a Config whose ports cannot all be served: one service's port
// is out of range, or two services want the same port. It names the
// services (ServiceHTTP … ServiceForward) so that a front end can say how
// to move one in its own terms (cmd/unplug names its --*-port flags).
type PortError struct {
	Port int
	// Services is the one service whose port is out of range, or the two
	// that want Port, the one configured first first.
	Services []string
	// Targets are the forwards' targets, index for index with Services
	// ("" for a built-in service).
	Targets []string
}

// OutOfRange reports whether the error is a port outside 0-65535 rather
// than a conflict.
func (e *PortError) OutOfRange() bool { return len(e.Services) == 1 }

// TwoForwards reports whether both services wanting the port are forwards.
func (e *PortError) TwoForwards() bool {
	return len(e.Services) == 2 && e.Services[0] == ServiceForward && e.Services[1] == ServiceForward
}

// Error says what is wrong in Config's terms.
func (e *PortError) Error() string {
	switch {
	case e.OutOfRange():
		return fmt.Sprintf("%s port %d is out of range; use 1-65535, or 0 to disable the service", e.Services[0], e.Port)
	case e.TwoForwards():
		return fmt.Sprintf("port %d is used by two forwards (to %s and %s); give each forward its own port", e.Port, e.Targets[0], e.Targets[1])
	}
	return fmt.Sprintf("port %d is used by both %s and %s; give one of them another port", e.Port, e.Services[0], e.Services[1])
}
