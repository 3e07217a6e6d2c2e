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
	// EhashEntries sizes the namespace's own TCP socket hash table
	// (net.ipv4.tcp_ehash_entries inside it): 0 means DefaultEhashEntries,
	// a negative value shares the host's table. A dump of the namespace's
	// sockets (sock_diag) walks every bucket of that table, so the host's
	// 262144 buckets make each dump cost milliseconds even with a handful of
	// sockets; an own table of a few thousand buckets costs about 0.1 ms.
	// The kernel rounds the size up to a power of two.
	EhashEntries int
}

// DefaultEhashEntries is the size of a namespace's own TCP socket hash
// table: ample for thousands of connections, and a full sock_diag dump of
// it costs about 0.1 ms (BenchmarkDumpEhash in internal/sockdiag).
const DefaultEhashEntries = 4096
