package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Row names, for Options.Only and the JSON report.
const (
	RowBulk       = "bulk"
	RowBulkRules  = "bulk-rules"
	RowLatencyP50 = "latency-p50"
	RowLatencyP99 = "latency-p99"
	RowConns      = "conns"
	RowServe      = "serve-start"
	RowVirtual    = "virtual-time"
	RowIperf      = "iperf3"
	// RowBulkDown is bulk from the peer to the kernel client.
	RowBulkDown = "bulk-down"
	// RowForwardUp, RowForwardDown and RowForwardRTT compare unplug serve
	// --forward with toxiproxy.
	RowForwardUp   = "forward-up"
	RowForwardDown = "forward-down"
	RowForwardRTT  = "forward-rtt"
)

// AllRows lists every row in the order Run reports them.
var AllRows = []string{RowVirtual, RowBulk, RowBulkDown, RowBulkRules, RowLatencyP50, RowLatencyP99, RowIperf, RowForwardUp, RowForwardDown, RowForwardRTT, RowConns, RowServe}

// Row statuses.
const (
	StatusPass = "pass"
	StatusFail = "fail"
	StatusInfo = "info" // reported, no target
	StatusSkip = "skip" // could not run here; Note says why
)

// Row is one line of the report: a metric measured on unplug's path and,
// where one exists, on the baseline in the same run.
type Row struct {
	Name   string `json:"name"`
	Metric string `json:"metric"`
	Unit   string `json:"unit"`
	// Unplug is the figure on unplug's path; Baseline the comparison (0:
	// none); Ratio is Unplug/Baseline (or the figure itself for rows whose
	// target is an absolute bound).
	Unplug   float64 `json:"unplug"`
	Baseline float64 `json:"baseline,omitempty"`
	Ratio    float64 `json:"ratio,omitempty"`
	Target   string  `json:"target"`
	Status   string  `json:"status"`
	Note     string  `json:"note,omitempty"`
	// Error says why the row could not be measured (Status fail or skip).
	Error string `json:"error,omitempty"`
}

// Report is the outcome of one Run.
type Report struct {
	Date      time.Time `json:"date"`
	Cores     int       `json:"cores"`
	Kernel    string    `json:"kernel"`
	GoVersion string    `json:"go"`
	Device    string    `json:"device"`
	MTU       int       `json:"mtu"`
	Quick     bool      `json:"quick"`
	Rows      []Row     `json:"rows"`
}

// Failed reports whether any row missed its target.
func (r *Report) Failed() bool {
	for _, row := range r.Rows {
		if row.Status == StatusFail {
			return true
		}
	}
	return false
}

// Row returns the row called name, or nil.
func (r *Report) Row(name string) *Row {
	for i := range r.Rows {
		if r.Rows[i].Name == name {
			return &r.Rows[i]
		}
	}
	return nil
}

// newReport fills in the machine.
func newReport(opts Options) *Report {
	device := "TUN with virtio-net header and TSO (tun.Config.Offload)"
	if opts.NoOffload {
		device = "plain TUN (one packet per system call)"
	}
	return &Report{
		Date:      time.Now().UTC().Truncate(time.Second),
		Cores:     runtime.NumCPU(),
		Kernel:    kernelRelease(),
		GoVersion: runtime.Version(),
		Device:    device,
		MTU:       opts.MTU,
		Quick:     opts.Quick,
	}
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // targets read ">= 0.50×"
	return enc.Encode(r)
}

// WriteTable writes the report as an aligned table with a header naming the
// machine, then the notes.
func (r *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "unplug bench  %s  %d cores  Linux %s  %s\n", r.Date.Format("2006-01-02"), r.Cores, r.Kernel, r.GoVersion)
	fmt.Fprintf(w, "device: %s, MTU %d", r.Device, r.MTU)
	if r.Quick {
		fmt.Fprint(w, " (quick run: short, small samples)")
	}
	fmt.Fprint(w, "\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "metric\tunplug\tbaseline\tratio\ttarget\tresult\t")
	var notes []string
	for _, row := range r.Rows {
		base, ratio := "-", "-"
		if row.Baseline != 0 {
			base = formatValue(row.Baseline, row.Unit)
		}
		if row.Ratio != 0 {
			ratio = fmt.Sprintf("%.2f×", row.Ratio)
			if row.Baseline == 0 {
				ratio = fmt.Sprintf("%.0f×", row.Ratio)
			}
		}
		value := formatValue(row.Unplug, row.Unit)
		if row.Status == StatusSkip {
			value = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", row.Metric, value, base, ratio, row.Target, row.Status)
		if row.Error != "" {
			notes = append(notes, fmt.Sprintf("%s: %s: %s", row.Metric, row.Status, row.Error))
		}
		if row.Note != "" {
			notes = append(notes, fmt.Sprintf("%s: %s", row.Metric, row.Note))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "\n%s\n", strings.Join(notes, "\n"))
	}
	return nil
}

// formatValue prints v in unit with a sensible precision.
func formatValue(v float64, unit string) string {
	switch unit {
	case "MB/s":
		return fmt.Sprintf("%.0f MB/s", v)
	case "µs":
		return fmt.Sprintf("%.1f µs", v)
	case "ms":
		return fmt.Sprintf("%.1f ms", v)
	case "KiB":
		return fmt.Sprintf("%.1f KiB", v)
	case "×":
		return fmt.Sprintf("%.0f×", v)
	}
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f %s", v, unit)
	}
	return fmt.Sprintf("%.2f %s", v, unit)
}

// judge sets row.Status from ok.
func judge(row *Row, ok bool) {
	row.Status = StatusFail
	if ok {
		row.Status = StatusPass
	}
}
