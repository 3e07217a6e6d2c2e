package scenarios

import (
	"strings"
	"testing"
	"time"
)

// testScenario declares one parameter of each kind.
func testScenario() Scenario {
	return Scenario{Name: "test", Params: []Param{
		{Name: "outage", Kind: KindDuration, Default: "3s", Min: "100ms", Max: "1h"},
		{Name: "count", Kind: KindInt, Default: "3", Min: "1", Max: "127"},
		{Name: "loss", Kind: KindPercent, Default: "5%", Max: "50%"},
		{Name: "size", Kind: KindSize, Default: "256KiB", Min: "1"},
		{Name: "idle", Kind: KindDuration, Default: "1s", Step: "1s"},
	}}
}

func TestParseParams(t *testing.T) {
	sc := testScenario()
	p, err := ParseParams(sc, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Duration("outage") != 3*time.Second || p.Int("count") != 3 || p.Percent("loss") != 5 || p.Size("size") != 256<<10 {
		t.Errorf("defaults: %v", p.List())
	}
	p, err = ParseParams(sc, map[string]string{"--outage": "1.5s", "count": "7", "loss": "0.5%", "size": "1MiB", "idle": "2s"})
	if err != nil {
		t.Fatal(err)
	}
	want := []ParamValue{{"outage", "1.5s"}, {"count", "7"}, {"loss", "0.5%"}, {"size", "1MiB"}, {"idle", "2s"}}
	got := p.List()
	if len(got) != len(want) {
		t.Fatalf("List = %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("List[%d] = %v, want %v (declaration order, canonical values)", i, got[i], want[i])
		}
	}
}

func TestParseParamsErrors(t *testing.T) {
	sc := testScenario()
	tests := []struct {
		flags map[string]string
		want  string // in the one-line error
	}{
		{map[string]string{"bogus": "1"}, "has no parameter --bogus; it takes --outage, --count, --loss, --size, --idle"},
		{map[string]string{"outage": "3x"}, `--outage "3x": not a duration`},
		{map[string]string{"outage": "-1s"}, "must not be negative"},
		{map[string]string{"outage": "10ms"}, "--outage 10ms: out of range: use 100ms to 1h"},
		{map[string]string{"count": "many"}, "not an integer"},
		{map[string]string{"count": "0"}, "out of range: use 1 to 127"},
		{map[string]string{"loss": "5"}, "not a percentage"},
		{map[string]string{"loss": "60%"}, "too large: use at most 50%"},
		{map[string]string{"loss": "200%"}, "between 0% and 100%"},
		{map[string]string{"size": "lots"}, "not a size"},
		{map[string]string{"size": "0"}, "too small: use at least 1"},
		{map[string]string{"idle": "1500ms"}, "must be a whole number of 1s"},
	}
	for _, tt := range tests {
		_, err := ParseParams(sc, tt.flags)
		if err == nil {
			t.Errorf("ParseParams(%v) succeeded", tt.flags)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseParams(%v) = %q, want one line containing %q", tt.flags, err, tt.want)
		}
	}
	if _, err := ParseParams(Scenario{Name: "bare"}, map[string]string{"x": "1"}); err == nil || !strings.Contains(err.Error(), "takes no parameters") {
		t.Errorf("parameter for a scenario without any: %v", err)
	}
}

func TestSizes(t *testing.T) {
	tests := []struct {
		in   string
		n    int64
		back string
	}{
		{"65536", 65536, "64KiB"},
		{"64K", 64000, "64000"},
		{"64k", 64000, "64000"},
		{"64KiB", 65536, "64KiB"},
		{"1MiB", 1 << 20, "1MiB"},
		{"2G", 2e9, "2000000000"},
		{"2GiB", 2 << 30, "2GiB"},
		{"1000", 1000, "1000"},
		{"12B", 12, "12"},
	}
	for _, tt := range tests {
		v, err := parseSize(tt.in)
		if err != nil || int64(v) != tt.n {
			t.Errorf("parseSize(%q) = %v, %v; want %d", tt.in, v, err, tt.n)
		}
		if got := formatSize(tt.n); got != tt.back {
			t.Errorf("formatSize(%d) = %q, want %q", tt.n, got, tt.back)
		}
	}
}

func TestParamAccessorsPanicOnMisuse(t *testing.T) {
	p := DefaultParams(testScenario())
	for name, f := range map[string]func(){
		"undeclared": func() { p.Duration("nope") },
		"wrong kind": func() { p.Int("outage") },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}
