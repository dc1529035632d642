package app_test

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// TestProductPrintsOnlyThroughTheLogger: the product writes what it has to
// say through its zerolog logger, whose lines carry no secret (the
// log-leak test); anything printed beside it reaches the host's log stream
// unchecked. So no product package calls fmt.Print*, print or println,
// imports the log package, or names os.Stdout or os.Stderr (which would
// make fmt.Fprint* the same thing); only handler/main.go hands os.Stdout
// to the logger and reports a fatal error on os.Stderr.
//
// The product packages are those the handler binary is built from: the
// module's packages in the import graph of ./handler, read with go/parser
// from the source (build-constrained files included; _test.go files not).
// Development packages (devstack, devidp, democms, azurite, the test
// support) are outside that graph, and stay outside it.
func TestProductPrintsOnlyThroughTheLogger(t *testing.T) {
	root := filepath.Join("..", "..", "..")
	modPath := modulePath(t, root)
	fset := token.NewFileSet()
	seen := map[string]bool{}
	var problems []string
	queue := []string{modPath + "/handler"}
	for len(queue) > 0 {
		pkg := queue[0]
		queue = queue[1:]
		if seen[pkg] {
			continue
		}
		seen[pkg] = true
		dir := filepath.Join(root, filepath.FromSlash(strings.TrimPrefix(pkg, modPath+"/")))
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("package %s: no Go files in %s (%v)", pkg, dir, err)
		}
		for _, name := range files {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			rel := path.Join(strings.TrimPrefix(pkg, modPath+"/"), filepath.Base(name))
			problems = append(problems, printViolations(fset, f, rel == "handler/main.go")...)
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if strings.HasPrefix(p, modPath+"/") {
					queue = append(queue, p)
				}
			}
		}
	}
	// The walk must have reached the packages that hold secrets, or it
	// proves nothing.
	for _, want := range []string{"app", "tokens", "msidentity", "connectflow", "httpapi", "secrets", "sweep", "events", "tablestore"} {
		if !seen[modPath+"/handler/internal/"+want] {
			t.Errorf("the handler's import graph does not reach handler/internal/%s: the walk is broken", want)
		}
	}
	sort.Strings(problems)
	for _, p := range problems {
		t.Error(p)
	}
}

// printViolations lists every way f prints beside the logger. inMain:
// f is handler/main.go, which may name os.Stdout and os.Stderr.
func printViolations(fset *token.FileSet, f *ast.File, inMain bool) []string {
	var out []string
	at := func(n ast.Node, format string, args ...any) {
		out = append(out, fmt.Sprintf("%s: %s", fset.Position(n.Pos()), fmt.Sprintf(format, args...)))
	}
	names := map[string]string{} // local name -> import path, for fmt and os
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		switch p {
		case "log":
			at(imp, "imports the log package: log through the zerolog logger")
		case "fmt", "os":
			local := p
			if imp.Name != nil {
				local = imp.Name.Name
			}
			if local == "." {
				at(imp, "dot-imports %s: its printing could not be told apart", p)
			}
			names[local] = p
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CallExpr:
			if id, ok := n.Fun.(*ast.Ident); ok && (id.Name == "print" || id.Name == "println") {
				at(n, "calls the builtin %s", id.Name)
			}
		case *ast.SelectorExpr:
			id, ok := n.X.(*ast.Ident)
			if !ok {
				return true
			}
			switch names[id.Name] {
			case "fmt":
				if strings.HasPrefix(n.Sel.Name, "Print") {
					at(n, "uses fmt.%s: log through the zerolog logger", n.Sel.Name)
				}
			case "os":
				if (n.Sel.Name == "Stdout" || n.Sel.Name == "Stderr") && !inMain {
					at(n, "names os.%s: only handler/main.go hands it to the logger", n.Sel.Name)
				}
			}
		}
		return true
	})
	return out
}

func modulePath(t *testing.T, root string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.Trim(strings.TrimSpace(p), `"`)
		}
	}
	t.Fatal("go.mod names no module")
	return ""
}

// TestPrintViolations: the check finds each way of printing, under any
// import name, and passes the logger's ways.
func TestPrintViolations(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		inMain    bool
		want      int
	}{
		{"fmt.Printf", `import "fmt"; func f(rt string) { fmt.Printf("%s", rt) }`, false, 1},
		{"fmt.Println renamed", `import f "fmt"; func g() { f.Println("x") }`, false, 1},
		{"fmt.Print", `import "fmt"; func g() { fmt.Print("x") }`, false, 1},
		{"log import", `import "log"; func g() { log.Printf("x") }`, false, 1},
		{"builtin println", `func g() { println("x") }`, false, 1},
		{"fmt.Fprintln to os.Stderr", `import ("fmt"; "os"); func g() { fmt.Fprintln(os.Stderr, "x") }`, false, 1},
		{"os.Stdout renamed", `import o "os"; var w = o.Stdout`, false, 1},
		{"dot import", `import . "fmt"; func g() { Println("x") }`, false, 1},
		{"main may name os.Stderr", `import ("fmt"; "os"); func g() { fmt.Fprintln(os.Stderr, "x") }`, true, 0},
		{"Errorf, Sprintf and Fprintf to a writer", `import ("fmt"; "io"); func g(w io.Writer) error { fmt.Fprintf(w, "%s", fmt.Sprint(1)); return fmt.Errorf("x") }`, false, 0},
		{"a method named Printf", `type l struct{}; func (l) Printf(string) {}; func g(x l) { x.Printf("x") }`, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, "x.go", "package x\n"+tc.src, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			if got := printViolations(fset, f, tc.inMain); len(got) != tc.want {
				t.Errorf("%d violations, want %d: %q", len(got), tc.want, got)
			}
		})
	}
}
