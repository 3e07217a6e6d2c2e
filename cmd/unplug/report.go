package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/unplug-dev/unplug/scenarios"
	"github.com/unplug-dev/unplug/stack/control"
)

// runReport asks a running `serve --record` for the report of every
// connection it has seen, from the peer's side of the link, and renders it
// like exec's; --expect gates make the exit code the verdict's.
func runReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("report", stderr)
	path := fs.String("control", control.DefaultPath(), "control socket of the running serve")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	svgPath := fs.String("svg", "", "draw the time-sequence graph to this SVG file")
	var expects expectsValue
	fs.Var(&expects, "expect", "gate for CI: detect<DURATION or reconnected (repeatable; exit 0 met, 1 not)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("report: unexpected argument %q", fs.Arg(0))
	}
	var svg *os.File
	if *svgPath != "" {
		f, err := os.Create(*svgPath)
		if err != nil {
			return fmt.Errorf("cannot write --svg %s: %w", *svgPath, errors.Unwrap(err))
		}
		defer f.Close()
		svg = f
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var gates []string
	for _, e := range expects {
		gates = append(gates, e.Raw)
	}
	var rep scenarios.Report
	if err := control.Call(ctx, *path, opReport, gates, &rep); err != nil {
		return err
	}
	if err := writeReport(stdout, &rep, *asJSON, svg, *svgPath, scenarios.SVGOptions{}); err != nil {
		return err
	}
	if len(expects) > 0 && rep.Verdict != scenarios.VerdictPass {
		var failed []string
		for _, e := range rep.Expectations {
			if !e.Pass {
				failed = append(failed, e.Name+": "+e.Measured)
			}
		}
		return exitCodeError{code: exitFail, msg: "expectation not met: " + strings.Join(failed, "; ")}
	}
	return nil
}

// writeReport prints rep as JSON or as the table, and draws its graph into
// svg (the --svg file, named svgPath in errors) when one was asked for: the
// one rendering of run, exec --report and report.
func writeReport(out io.Writer, rep *scenarios.Report, asJSON bool, svg *os.File, svgPath string, opts scenarios.SVGOptions) error {
	var err error
	if asJSON {
		err = rep.WriteJSON(out)
	} else {
		err = rep.WriteTable(out)
	}
	if err != nil {
		return err
	}
	if svg != nil {
		if err := rep.WriteSVGOptions(svg, opts); err != nil {
			return fmt.Errorf("write --svg %s: %w", svgPath, err)
		}
	}
	return nil
}
