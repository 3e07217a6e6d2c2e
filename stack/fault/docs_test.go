package fault

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

// TestDocumentedExamples parses every example of docs/fault-rules.md (the
// lines of its ```faults blocks) so the documentation cannot drift from the
// grammar.
func TestDocumentedExamples(t *testing.T) {
	f, err := os.Open("../../docs/fault-rules.md")
	if os.IsNotExist(err) {
		t.Skip("docs/fault-rules.md not in this tree")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	in := false
	for sc := bufio.NewScanner(f); sc.Scan(); {
		line := sc.Text()
		switch {
		case line == "```faults":
			in = true
		case strings.HasPrefix(line, "```"):
			in = false
		case in:
			spec, _, _ := strings.Cut(line, "#")
			if strings.TrimSpace(spec) == "" {
				continue
			}
			n++
			if _, err := ParseSpec(spec); err != nil {
				t.Errorf("documented example %q: %v", spec, err)
			}
		}
	}
	if n < 10 {
		t.Errorf("found only %d examples", n)
	}
}
