package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestMedianAndPercentile(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
	sorted := make([]time.Duration, 100)
	for i := range sorted {
		sorted[i] = time.Duration(i+1) * time.Microsecond
	}
	for _, tt := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Microsecond}, {99, 99 * time.Microsecond}, {100, 100 * time.Microsecond}, {0.1, time.Microsecond}} {
		if got := percentile(sorted, tt.p); got != tt.want {
			t.Errorf("percentile(1..100 µs, %v) = %v, want %v", tt.p, got, tt.want)
		}
	}
	if percentile(nil, 50) != 0 {
		t.Error("percentile of nothing is not 0")
	}
}

func TestWriteTable(t *testing.T) {
	rep := &Report{Cores: 2, Kernel: "6.1", GoVersion: "go1.26", Device: "dev", MTU: 1500, Rows: []Row{
		{Name: RowBulk, Metric: "bulk", Unit: "MB/s", Unplug: 1500, Baseline: 3000, Ratio: 0.5, Target: ">= 0.50×", Status: StatusPass, Note: "n1"},
		{Name: RowServe, Metric: "serve", Unit: "ms", Unplug: 6.25, Target: "< 100 ms", Status: StatusPass},
		{Name: RowIperf, Metric: "iperf3", Unit: "MB/s", Target: "report", Status: StatusSkip, Error: "iperf3 not found"},
	}}
	var buf bytes.Buffer
	if err := rep.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"2 cores", "1500 MB/s", "3000 MB/s", "0.50×", "6.2 ms", "skip", "iperf3: skip: iperf3 not found", "bulk: n1"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if rep.Failed() {
		t.Error("Failed with no failed row")
	}
	rep.Rows[1].Status = StatusFail
	if !rep.Failed() {
		t.Error("not Failed with a failed row")
	}
}

func TestOptionsDefaults(t *testing.T) {
	full, quick := Options{}.withDefaults(), Options{Quick: true}.withDefaults()
	if full.Conns != 10000 || full.Duration != 2*time.Second || full.MTU != 1500 {
		t.Errorf("full defaults %+v", full)
	}
	if quick.Conns >= full.Conns || quick.Duration >= full.Duration || quick.Rounds > full.Rounds {
		t.Errorf("quick defaults %+v are not smaller than %+v", quick, full)
	}
	if set := (Options{Conns: 7}).withDefaults(); set.Conns != 7 {
		t.Errorf("Conns 7 became %d", set.Conns)
	}
	o := Options{Only: []string{RowBulk}}
	if !o.wants(RowBulk) || o.wants(RowConns) || !(Options{}).wants(RowConns) {
		t.Error("wants does not follow Only")
	}
}
