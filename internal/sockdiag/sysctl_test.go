package sockdiag

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestReadTCPSysctlsFake: values are converted to their units, settings an
// older kernel lacks are marked, and bad values are errors.
func TestReadTCPSysctlsFake(t *testing.T) {
	vals := map[string]string{
		"net.ipv4.tcp_retries1": "3", "net.ipv4.tcp_retries2": "15", "net.ipv4.tcp_syn_retries": "6",
		"net.ipv4.tcp_synack_retries": "5", "net.ipv4.tcp_orphan_retries": "0",
		"net.ipv4.tcp_keepalive_time": "7200", "net.ipv4.tcp_keepalive_intvl": "75", "net.ipv4.tcp_keepalive_probes": "9",
		"net.ipv4.tcp_fin_timeout": "60",
	}
	get := func(name string) (string, error) {
		if v, ok := vals[name]; ok {
			return v, nil
		}
		return "", errors.New("sysctl " + name + ": no such sysctl")
	}
	got, err := ReadTCPSysctls(get)
	if err != nil {
		t.Fatal(err)
	}
	want := TCPSysctls{Retries1: 3, Retries2: 15, SynRetries: 6, SynAckRetries: 5, KeepaliveTime: 2 * time.Hour,
		KeepaliveIntvl: 75 * time.Second, KeepaliveProbes: 9, FinTimeout: time.Minute, SynLinearTimeouts: -1}
	if got != want {
		t.Errorf("ReadTCPSysctls = %+v\nwant %+v", got, want)
	}
	vals["net.ipv4.tcp_retries2"] = "lots"
	delete(vals, "net.ipv4.tcp_syn_retries")
	if _, err := ReadTCPSysctls(get); err == nil || !strings.Contains(err.Error(), "tcp_retries2") || !strings.Contains(err.Error(), "tcp_syn_retries") {
		t.Errorf("err = %v, want both the bad and the missing sysctl named", err)
	}
}
