package scenarios

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/unplug-dev/unplug/internal/units"
)

// ParamKind is the type of a scenario parameter's value.
type ParamKind uint8

// Parameter kinds.
const (
	// KindDuration is a Go duration: 3s, 500ms, 1m30s.
	KindDuration ParamKind = iota + 1
	// KindInt is a decimal integer.
	KindInt
	// KindPercent is a percentage with a % sign: 5%, 0.5%.
	KindPercent
	// KindSize is a byte count with an optional unit as package units reads
	// it: 65536, 64KiB, 1MiB (binary), 64k, 1M (decimal: 64000, 1000000).
	KindSize
)

// String names the kind as help texts show it.
func (k ParamKind) String() string {
	switch k {
	case KindDuration:
		return "duration"
	case KindInt:
		return "int"
	case KindPercent:
		return "percent"
	case KindSize:
		return "size"
	}
	return "unknown"
}

// Param declares one parameter of a scenario: what `unplug run NAME
// --PARAM value` accepts, its default and its help text. Min and Max, when
// not empty, bound the value and are written in the same syntax; Step,
// when not empty, is a unit the value must be a whole multiple of (1s for
// socket options counted in seconds).
type Param struct {
	Name     string // flag name without dashes: "retries2", "user-timeout"
	Kind     ParamKind
	Default  string
	Help     string
	Min, Max string
	Step     string
}

// ParamValue is one parameter as a report lists it.
type ParamValue struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Params are a scenario's parsed and validated parameter values. Build them
// with ParseParams (or DefaultParams); the accessors panic on names the
// scenario did not declare, which is a programming error.
type Params struct {
	decl []Param
	vals map[string]float64 // durations in ns, sizes in bytes, percents in %
}

// DefaultParams returns sc's parameters at their defaults.
func DefaultParams(sc Scenario) Params {
	p, err := ParseParams(sc, nil)
	if err != nil {
		panic(fmt.Sprintf("scenario %s: bad default: %v", sc.Name, err))
	}
	return p
}

// ParseParams validates values given on the command line (name, with or
// without leading dashes, to value) against sc's declarations and fills in
// defaults. Errors are one line naming the parameter and what is accepted.
func ParseParams(sc Scenario, values map[string]string) (Params, error) {
	p := Params{decl: sc.Params, vals: make(map[string]float64, len(sc.Params))}
	byName := make(map[string]Param, len(sc.Params))
	for _, d := range sc.Params {
		byName[d.Name] = d
		v, err := d.parse(d.Default)
		if err == nil {
			err = d.check(v)
		}
		if err != nil {
			return Params{}, fmt.Errorf("scenario %s: default of --%s: %w", sc.Name, d.Name, err)
		}
		p.vals[d.Name] = v
	}
	names := make([]string, 0, len(values))
	for n := range values {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, raw := range names {
		name := strings.TrimLeft(raw, "-")
		d, ok := byName[name]
		if !ok {
			return Params{}, unknownParam(sc, name)
		}
		v, err := d.parse(values[raw])
		if err != nil {
			return Params{}, fmt.Errorf("--%s %q: %w", name, values[raw], err)
		}
		if err := d.check(v); err != nil {
			return Params{}, fmt.Errorf("--%s %s: %w", name, values[raw], err)
		}
		p.vals[name] = v
	}
	return p, nil
}

func unknownParam(sc Scenario, name string) error {
	if len(sc.Params) == 0 {
		return fmt.Errorf("scenario %s takes no parameters, not --%s", sc.Name, name)
	}
	known := make([]string, len(sc.Params))
	for i, d := range sc.Params {
		known[i] = "--" + d.Name
	}
	return fmt.Errorf("scenario %s has no parameter --%s; it takes %s", sc.Name, name, strings.Join(known, ", "))
}

// parse converts s according to the kind, to the internal unit.
func (d Param) parse(s string) (float64, error) {
	s = strings.TrimSpace(s)
	switch d.Kind {
	case KindDuration:
		v, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("not a duration; use e.g. 3s or 500ms")
		}
		if v < 0 {
			return 0, fmt.Errorf("must not be negative")
		}
		return float64(v), nil
	case KindInt:
		v, err := strconv.Atoi(s)
		if err != nil {
			return 0, fmt.Errorf("not an integer")
		}
		return float64(v), nil
	case KindPercent:
		num, ok := strings.CutSuffix(s, "%")
		v, err := strconv.ParseFloat(num, 64)
		if !ok || err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return 0, fmt.Errorf("not a percentage; use e.g. 5%%")
		}
		if v < 0 || v > 100 {
			return 0, fmt.Errorf("must be between 0%% and 100%%")
		}
		return v, nil
	case KindSize:
		return parseSize(s)
	}
	return 0, fmt.Errorf("parameter --%s has no kind (scenario bug)", d.Name)
}

// check enforces Min, Max and Step.
func (d Param) check(v float64) error {
	if d.Step != "" {
		if step, _ := d.parse(d.Step); step > 0 && math.Mod(v, step) != 0 {
			return fmt.Errorf("must be a whole number of %s", d.Step)
		}
	}
	lo, hi := math.Inf(-1), math.Inf(1)
	if d.Min != "" {
		lo, _ = d.parse(d.Min)
	}
	if d.Max != "" {
		hi, _ = d.parse(d.Max)
	}
	if v >= lo && v <= hi {
		return nil
	}
	switch {
	case d.Min != "" && d.Max != "":
		return fmt.Errorf("out of range: use %s to %s", d.Min, d.Max)
	case d.Min != "":
		return fmt.Errorf("too small: use at least %s", d.Min)
	}
	return fmt.Errorf("too large: use at most %s", d.Max)
}

// format renders an internal value in the kind's canonical syntax.
func (d Param) format(v float64) string {
	switch d.Kind {
	case KindDuration:
		return time.Duration(v).String()
	case KindPercent:
		return strconv.FormatFloat(v, 'g', -1, 64) + "%"
	case KindSize:
		return formatSize(int64(v))
	}
	return strconv.FormatInt(int64(v), 10)
}

// parseSize reads a size parameter by the one convention of package units
// (k, M, G decimal; KiB, MiB, GiB binary).
func parseSize(s string) (float64, error) {
	n, err := units.ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("not a size; use e.g. 65536, 64KiB or 1MiB (binary), 64k or 1M (decimal)")
	}
	return float64(n), nil
}

// formatSize writes a size parameter as units.FormatSize does.
func formatSize(n int64) string { return units.FormatSize(n) }

func (p Params) get(name string, kind ParamKind) float64 {
	for _, d := range p.decl {
		if d.Name == name {
			if d.Kind != kind {
				panic(fmt.Sprintf("scenarios: parameter %s is a %s, not a %s", name, d.Kind, kind))
			}
			return p.vals[name]
		}
	}
	panic(fmt.Sprintf("scenarios: no parameter %q declared", name))
}

// Duration returns a duration parameter.
func (p Params) Duration(name string) time.Duration {
	return time.Duration(p.get(name, KindDuration))
}

// Int returns an integer parameter.
func (p Params) Int(name string) int { return int(p.get(name, KindInt)) }

// Percent returns a percentage parameter as a number of percent (5 for 5%).
func (p Params) Percent(name string) float64 { return p.get(name, KindPercent) }

// Size returns a size parameter in bytes.
func (p Params) Size(name string) int64 { return int64(p.get(name, KindSize)) }

// List returns every parameter with its value in declaration order, in the
// canonical syntax (durations as Go prints them, sizes with binary units).
func (p Params) List() []ParamValue {
	out := make([]ParamValue, 0, len(p.decl))
	for _, d := range p.decl {
		out = append(out, ParamValue{Name: d.Name, Value: d.format(p.vals[d.Name])})
	}
	return out
}
