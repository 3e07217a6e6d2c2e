package main

import (
	"bytes"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/internal/capture"
)

// TestCaptureSurvivesKill runs `serve --pcap` in a private namespace,
// sends numbered messages through its echo service every 10 ms for a few
// seconds, and kills it with SIGKILL mid-traffic: the capture must read
// back whole with capture's reader and with tshark, and hold every
// message echoed more than a second (plus a margin for a loaded machine)
// before the kill.
func TestCaptureSurvivesKill(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	p, _ := startIsolatedServe(t, dir)
	c := dialInNetns(t, p.cmd.Process.Pid, "198.18.0.2:7")
	defer c.Close()
	c.SetDeadline(time.Now().Add(safetyTimeout))

	var echoed []time.Time // when message i came back
	buf := make([]byte, 64)
	for i := 0; i < 300; i++ {
		msg := fmt.Sprintf("unplug-msg-%06d;", i)
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil || string(buf[:len(msg)]) != msg {
			t.Fatalf("echo of %q: %q, %v", msg, buf[:len(msg)], err)
		}
		echoed = append(echoed, time.Now())
		time.Sleep(10 * time.Millisecond)
	}
	killed := time.Now()
	p.signal(t, syscall.SIGKILL)
	p.wait(t)

	pcap := filepath.Join(dir, "serve.pcapng")
	recs, err := capture.ReadFile(pcap)
	if err != nil {
		t.Fatalf("%v (a torn block at the end?)", err)
	}
	last, n := -1, len(recs)
	for _, rec := range recs {
		if i := bytes.Index(rec.Data, []byte("unplug-msg-")); i >= 0 && len(rec.Data) >= i+17 {
			if k, err := strconv.Atoi(string(rec.Data[i+11 : i+17])); err == nil && k > last {
				last = k
			}
		}
	}
	// The newest message the capture must hold: echoed 1 s (the flush
	// interval) plus a margin before the kill.
	want := -1
	for i, at := range echoed {
		if killed.Sub(at) > capture.DefaultFlushInterval+500*time.Millisecond {
			want = i
		}
	}
	t.Logf("%d packets captured; newest message %d of %d (killed %v after the last echo)", n, last, len(echoed)-1, killed.Sub(echoed[len(echoed)-1]))
	if last < want {
		t.Errorf("the capture ends at message %d; message %d was echoed %v before the kill and is missing",
			last, want, killed.Sub(echoed[want]).Round(time.Millisecond))
	}
	if path, err := exec.LookPath("tshark"); err == nil {
		cmd := exec.Command(path, "-r", pcap, "-T", "fields", "-e", "frame.number")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		lines := strings.Count(string(out), "\n")
		// tshark warns about running as root; a torn block it reports as
		// "cut short in the middle of a packet".
		if err != nil || lines != n || strings.Contains(stderr.String(), "cut short") {
			t.Errorf("tshark read %d packets (reader: %d): %v\n%.300s", lines, n, err, stderr.String())
		}
	}
}
