package vlink

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestTCPTimerArmers derives tcpTimerArmers from the pinned gVisor's TCP
// source: which method each of the endpoint's timers runs (the
// X.init(clock, timerHandler(e, M)) and newBackoffTimer(..., timerHandler(e,
// M)) calls), and which functions arm each timer (X.enable calls). A gVisor
// upgrade that arms a timer from a new place, or moves a timer's method,
// fails here instead of naming the timer wrongly in --step transcripts.
func TestTCPTimerArmers(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "gvisor.dev/gvisor").Output()
	if err != nil {
		t.Skipf("gVisor's source is not at hand (go list -m: %v)", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "pkg", "tcpip", "transport", "tcp")
	fset := token.NewFileSet()
	names, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no Go files in %s (%v)", dir, err)
	}
	var files []*ast.File
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") || strings.HasSuffix(name, "_state_autogen.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		if f.Name.Name == "tcp" {
			files = append(files, f)
		}
	}
	// Method name -> "(*Recv).name", for the timers' methods.
	methods := map[string][]string{}
	for _, f := range files {
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok {
				methods[fd.Name.Name] = append(methods[fd.Name.Name], funcName(fd))
			}
		}
	}
	method := func(e ast.Expr) string {
		sel, ok := e.(*ast.SelectorExpr)
		if !ok {
			t.Fatalf("%s: timerHandler's function is not a method value", fset.Position(e.Pos()))
		}
		if m := methods[sel.Sel.Name]; len(m) == 1 {
			return m[0]
		}
		t.Fatalf("%s: method %s is declared %d times", fset.Position(e.Pos()), sel.Sel.Name, len(methods[sel.Sel.Name]))
		return ""
	}
	handler := func(e ast.Expr) (ast.Expr, bool) {
		c, ok := e.(*ast.CallExpr)
		if !ok || len(c.Args) != 2 {
			return nil, false
		}
		if id, ok := c.Fun.(*ast.Ident); !ok || id.Name != "timerHandler" {
			return nil, false
		}
		return c.Args[1], true
	}
	timerOf := map[string]string{} // timer field -> the method it runs
	want := map[string]string{}    // armer -> the method its timer runs
	type enable struct {
		field, armer string
		pos          token.Pos
	}
	var enables []enable
	for _, f := range files {
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				c, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				if id, ok := c.Fun.(*ast.Ident); ok && id.Name == "newBackoffTimer" {
					if h, ok := handler(c.Args[len(c.Args)-1]); ok {
						want["newBackoffTimer"] = method(h)
					}
					return true
				}
				sel, ok := c.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				field := timerField(sel.X)
				switch sel.Sel.Name {
				case "init":
					if len(c.Args) == 2 {
						if h, ok := handler(c.Args[1]); ok {
							timerOf[field] = method(h)
						}
					}
				case "enable":
					enables = append(enables, enable{field, funcName(fd), c.Pos()})
				}
				return true
			})
		}
	}
	for _, e := range enables {
		m, ok := timerOf[e.field]
		if !ok {
			continue // not one of the endpoint's timers
		}
		if prev, dup := want[e.armer]; dup && prev != m {
			t.Fatalf("%s: %s arms two timers (%s, %s): the armer no longer names the timer", fset.Position(e.pos), e.armer, prev, m)
		}
		want[e.armer] = m
	}
	if len(timerOf) == 0 || len(want) == 0 {
		t.Fatalf("found no TCP timers in %s", dir)
	}
	if !reflect.DeepEqual(want, tcpTimerArmers) {
		t.Errorf("tcpTimerArmers = %v\nthe pinned gVisor's source says %v", tcpTimerArmers, want)
	}
}

// funcName is a declaration's name as the runtime prints it, without the
// package: "(*sender).postXmit" or "newBackoffTimer".
func funcName(fd *ast.FuncDecl) string {
	if fd.Recv == nil || len(fd.Recv.List) == 0 {
		return fd.Name.Name
	}
	switch r := fd.Recv.List[0].Type.(type) {
	case *ast.StarExpr:
		if id, ok := r.X.(*ast.Ident); ok {
			return "(*" + id.Name + ")." + fd.Name.Name
		}
	case *ast.Ident:
		return r.Name + "." + fd.Name.Name
	}
	return fd.Name.Name
}

// timerField names the timer a selector reaches: its last field, with the
// one before when that is "timer" (e.keepalive.timer -> "keepalive.timer").
func timerField(e ast.Expr) string {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok {
		return ""
	}
	if sel.Sel.Name == "timer" {
		if inner, ok := sel.X.(*ast.SelectorExpr); ok {
			return inner.Sel.Name + ".timer"
		}
	}
	return sel.Sel.Name
}
