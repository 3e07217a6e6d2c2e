package tun

// NamespaceConfig describes the private network namespace NewNamespace
// builds: the TUN device inside it and the per-namespace sysctls to apply
// before anything connects.
type NamespaceConfig struct {
	// TUN configures the device created inside the namespace; its zero
	// value is not useful, start from DefaultConfig().
	TUN Config
	// Sysctls are written under /proc/sys inside the namespace, e.g.
	// "net.ipv4.tcp_retries2": "3". Only net.* names are accepted: they are
	// the ones that are per network namespace, so the host never changes.
	// Names of device sysctls (net.ipv6.conf.unplug0.*) are applied after
	// the device exists; all others before it is created.
	Sysctls map[string]string
}
