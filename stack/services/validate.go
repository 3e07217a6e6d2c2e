package services

// Validate reports the first problem with cfg's ports and forwards (a port
// out of range, two services or forwards on one port, a malformed target)
// without starting anything, so a command line can be rejected before any
// device or socket exists. Start checks the same.
func (c Config) Validate() error {
	_, err := plan(c)
	return err
}
