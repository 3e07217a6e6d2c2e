package unplug_test

import (
	"os"
	"strings"
	"testing"
)

// TestREADMEExampleCompiles holds README's "From Go" snippet to the
// TestYourClient that example_test.go compiles and runs: the README shows
// that function verbatim, and it stays within 15 lines.
func TestREADMEExampleCompiles(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	const start = "```go\nfunc TestYourClient("
	i := strings.Index(string(readme), start)
	if i < 0 {
		t.Fatal("README.md has no ```go block starting with func TestYourClient(")
	}
	block := string(readme)[i+len("```go\n"):]
	block = block[:strings.Index(block, "```")]
	if !strings.Contains(string(src), block) {
		t.Errorf("README's TestYourClient is not example_test.go's:\n%s", block)
	}
	if n := strings.Count(strings.TrimSpace(block), "\n") + 1; n > 15 {
		t.Errorf("README's go test usage is %d lines, want at most 15", n)
	}
}
