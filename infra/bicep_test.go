package infra

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
)

// The Bicep syntax checks run tools/bicepsyntax.cjs (tree-sitter-bicep) with
// node. Both come from `make deps`; without them these tests fail, never skip.

const depsHint = "run `make deps` (npm ci in .devtools/npm) and make sure node 18+ is on PATH"

// repoRoot is the repository root, one level above this package.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found: %v", err)
	}
	return root
}

// syntaxTool returns the node binary and the checker script, failing the test
// with the fix when either node or tree-sitter-bicep is missing.
func syntaxTool(t testing.TB) (node, script string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found on PATH: %s", depsHint)
	}
	root := repoRoot(t)
	for _, pkg := range []string{"tree-sitter", "tree-sitter-bicep"} {
		if _, err := os.Stat(filepath.Join(root, ".devtools", "npm", "node_modules", pkg, "package.json")); err != nil {
			t.Fatalf("npm package %s is not installed: %s", pkg, depsHint)
		}
	}
	return node, filepath.Join(root, "infra", "tools", "bicepsyntax.cjs")
}

// runSyntax runs the checker and returns its output and exit code.
func runSyntax(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	node, script := syntaxTool(t)
	cmd := exec.Command(node, append([]string{script}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("run %s: %v", script, err)
	}
	if code == 3 {
		t.Fatalf("bicepsyntax cannot load tree-sitter-bicep: %s\n%s", depsHint, errOut.String())
	}
	return out.String(), errOut.String(), code
}

// bicepFiles lists every .bicep and .bicepparam file under infra/.
func bicepFiles(t testing.TB) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(filepath.Join(repoRoot(t), "infra"), func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".bicep") || strings.HasSuffix(path, ".bicepparam")) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return files
}

func TestBicepFilesParse(t *testing.T) {
	files := bicepFiles(t)
	// main, its parameters and the seven modules at least.
	if len(files) < 9 {
		t.Fatalf("found %d Bicep files under infra/, want main.bicep, main.bicepparam and the modules: %v", len(files), files)
	}
	stdout, stderr, code := runSyntax(t, append([]string{"check"}, files...)...)
	if code != 0 {
		t.Fatalf("Bicep syntax errors (exit %d):\n%s%s", code, stdout, stderr)
	}
}

// TestSyntaxCheckerFindsErrors proves the check above can fail: each broken
// file must be reported with its own line.
func TestSyntaxCheckerFindsErrors(t *testing.T) {
	tests := []struct {
		name, file, source string
		wantLine           string
	}{
		{"unclosed object", "a.bicep", "param name string\n\nresource sa 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  name: name\n", ":4:"},
		{"missing value", "b.bicep", "param a string\nvar b = \noutput c string = a\n", ":3:"},
		{"stray token", "c.bicep", "var a = {\n  x: 1 2\n}\n", ":2:"},
		{"malformed extension", "d.bicep", "extension microsoftGraphV1 with\nparam a string\n", ":1:"},
		{"bicepparam without using value", "e.bicepparam", "using './main.bicep'\n\nparam name =\n", ":3:"},
		{"bicepparam typed param", "f.bicepparam", "using './main.bicep'\nparam name string = 'x' 'y'\n", ":2:"},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.file)
			if err := os.WriteFile(path, []byte(tt.source), 0o644); err != nil {
				t.Fatal(err)
			}
			stdout, _, code := runSyntax(t, "check", path)
			if code != 1 {
				t.Fatalf("exit code %d, want 1 for a broken file; output:\n%s", code, stdout)
			}
			if !strings.Contains(stdout, path+tt.wantLine) {
				t.Errorf("output does not point at %s%s:\n%s", path, tt.wantLine, stdout)
			}
		})
	}

	// And the constructs the grammar predates pass when well formed.
	good := filepath.Join(dir, "good.bicepparam")
	if err := os.WriteFile(good, []byte("using './main.bicep'\n\nparam name = 'x'\nparam n = 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ext := filepath.Join(dir, "good.bicep")
	if err := os.WriteFile(ext, []byte("extension microsoftGraphV1\n\nparam a string\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if stdout, _, code := runSyntax(t, "check", good, ext); code != 0 {
		t.Fatalf("well-formed files rejected:\n%s", stdout)
	}
}

// ---- the syntax tree, for the cross-checks ----

// node is one named node of a tree-sitter-bicep syntax tree.
type node struct {
	Type     string  `json:"type"`
	Field    string  `json:"field"`
	Line     int     `json:"line"`
	Text     string  `json:"text"`
	Children []*node `json:"children"`
}

var (
	treeMu    sync.Mutex
	treeCache = map[string]*node{}
)

// bicepTree parses infra/<rel> once per test binary.
func bicepTree(t testing.TB, rel string) *node {
	t.Helper()
	path := filepath.Join(repoRoot(t), "infra", filepath.FromSlash(rel))
	treeMu.Lock()
	defer treeMu.Unlock()
	if n, ok := treeCache[path]; ok {
		return n
	}
	stdout, stderr, code := runSyntax(t, "tree", path)
	if code != 0 {
		t.Fatalf("parse %s (exit %d):\n%s", rel, code, stderr)
	}
	var n node
	if err := json.Unmarshal([]byte(stdout), &n); err != nil {
		t.Fatalf("parse %s: %v", rel, err)
	}
	treeCache[path] = &n
	return &n
}

// walk visits n and its descendants depth first; fn returns false to skip
// a node's children.
func (n *node) walk(fn func(*node) bool) {
	if n == nil || !fn(n) {
		return
	}
	for _, c := range n.Children {
		c.walk(fn)
	}
}

// all returns every descendant (n included) of the given type.
func (n *node) all(typ string) []*node {
	var out []*node
	n.walk(func(c *node) bool {
		if c.Type == typ {
			out = append(out, c)
		}
		return true
	})
	return out
}

// first returns the first direct child of the given type, or nil.
func (n *node) first(typ string) *node {
	if n == nil {
		return nil
	}
	for _, c := range n.Children {
		if c.Type == typ {
			return c
		}
	}
	return nil
}

// unquote returns a string literal's value, and false when it interpolates.
func unquote(n *node) (string, bool) {
	if n == nil || n.Type != "string" {
		return "", false
	}
	var b strings.Builder
	for _, c := range n.Children {
		switch c.Type {
		case "string_content":
			b.WriteString(c.Text)
		case "escape_sequence":
			b.WriteString(strings.TrimPrefix(c.Text, `\`))
		default:
			return n.Text, false
		}
	}
	return b.String(), true
}

// decl is a top-level (or nested) declaration: param, var, output, resource, module.
type decl struct {
	kind     string // parameter_declaration, variable_declaration, ...
	name     string
	typ      string // resource type or module path; param/output type
	value    *node  // param default, var value, output value, resource/module body
	node     *node
	decorate string // text of the decorators right before it
}

// declarations lists the declarations of one file, in order. Resources
// nested in another resource's body are included.
func declarations(root *node) []decl {
	var out []decl
	var lastDecorators string
	for _, stmt := range root.Children {
		if stmt.Type == "decorators" {
			lastDecorators = stmt.Text
			continue
		}
		if stmt.Type == "comment" {
			continue
		}
		collectDecl(stmt, lastDecorators, &out)
		lastDecorators = ""
	}
	return out
}

func collectDecl(n *node, decorators string, out *[]decl) {
	d := decl{kind: n.Type, node: n, decorate: decorators}
	switch n.Type {
	case "parameter_declaration", "output_declaration":
		if len(n.Children) < 2 {
			return
		}
		d.name, d.typ = n.Children[0].Text, n.Children[1].Text
		if len(n.Children) > 2 {
			d.value = n.Children[2]
		}
	case "variable_declaration":
		if len(n.Children) < 2 {
			return
		}
		d.name, d.value = n.Children[0].Text, n.Children[1]
	case "resource_declaration", "module_declaration":
		if len(n.Children) < 3 {
			return
		}
		d.name = n.Children[0].Text
		d.typ, _ = unquote(n.Children[1])
		d.value = n.Children[len(n.Children)-1]
		if body := bodyObject(d.value); body != nil {
			for _, p := range body.Children {
				if p.Type == "object_property" && len(p.Children) == 1 && p.Children[0].Type == "resource_declaration" {
					collectDecl(p.Children[0], "", out)
				}
			}
		}
	default:
		return
	}
	*out = append(*out, d)
}

// bodyObject returns the object of a resource or module body, looking
// through `if (...)` and `[for ...]`.
func bodyObject(n *node) *node {
	switch {
	case n == nil:
		return nil
	case n.Type == "object":
		return n
	case n.Type == "if_statement":
		return n.first("object")
	case n.Type == "for_statement":
		for i := len(n.Children) - 1; i >= 0; i-- {
			if o := bodyObject(n.Children[i]); o != nil {
				return o
			}
		}
	}
	return nil
}

// condition returns the text of a resource or module's `if (...)`, or "".
func condition(d decl) string {
	if d.value != nil && d.value.Type == "if_statement" {
		if p := d.value.first("parenthesized_expression"); p != nil {
			return strings.TrimSuffix(strings.TrimPrefix(p.Text, "("), ")")
		}
	}
	return ""
}

// props returns an object's direct properties by key.
func props(obj *node) map[string]*node {
	out := map[string]*node{}
	if obj == nil {
		return out
	}
	for _, p := range obj.Children {
		if p.Type != "object_property" || len(p.Children) < 2 {
			continue
		}
		key := p.Children[0].Text
		if s, ok := unquote(p.Children[0]); ok {
			key = s
		} else if p.Children[0].Type == "string" {
			key = strings.TrimSuffix(strings.TrimPrefix(key, "'"), "'") // interpolated: '${x}' -> ${x}
		}
		out[key] = p.Children[1]
	}
	return out
}

// prop follows a path of keys through nested objects.
func prop(obj *node, path ...string) *node {
	for _, k := range path {
		if obj == nil {
			return nil
		}
		obj = props(obj)[k]
	}
	return obj
}

// file is one parsed Bicep file with its declarations by kind and name.
type file struct {
	rel    string
	root   *node
	decls  []decl
	source string
}

func loadFile(t testing.TB, rel string) *file {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repoRoot(t), "infra", filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	root := bicepTree(t, rel)
	return &file{rel: rel, root: root, decls: declarations(root), source: string(src)}
}

func (f *file) get(kind, name string) (decl, bool) {
	for _, d := range f.decls {
		if d.kind == kind && d.name == name {
			return d, true
		}
	}
	return decl{}, false
}

func (f *file) must(t testing.TB, kind, name string) decl {
	t.Helper()
	d, ok := f.get(kind, name)
	if !ok {
		t.Fatalf("%s: no %s %q", f.rel, strings.TrimSuffix(kind, "_declaration"), name)
	}
	return d
}

func (f *file) ofKind(kind string) []decl {
	var out []decl
	for _, d := range f.decls {
		if d.kind == kind {
			out = append(out, d)
		}
	}
	return out
}

// resourcesOfType lists resources whose type starts with prefix (e.g. "Microsoft.Graph/applications@").
func (f *file) resourcesOfType(prefix string) []decl {
	var out []decl
	for _, d := range f.ofKind("resource_declaration") {
		if strings.HasPrefix(d.typ, prefix) {
			out = append(out, d)
		}
	}
	return out
}

// keysOf collects the keys (and value nodes) of the objects an expression
// builds: object literals, through var references, union(...), ternaries and
// parentheses. It is how the app settings are read from main.bicep.
func (f *file) keysOf(expr *node, into map[string]*node) {
	switch {
	case expr == nil:
	case expr.Type == "object":
		for k, v := range props(expr) {
			into[k] = v
		}
	case expr.Type == "identifier":
		if d, ok := f.get("variable_declaration", expr.Text); ok {
			f.keysOf(d.value, into)
		}
	case expr.Type == "call_expression":
		if expr.Children[0].Text == "union" {
			for _, a := range expr.first("arguments").Children {
				f.keysOf(a, into)
			}
		}
	case expr.Type == "ternary_expression":
		for _, c := range expr.Children {
			if c.Field == "consequence" || c.Field == "alternative" {
				f.keysOf(c, into)
			}
		}
	case expr.Type == "parenthesized_expression":
		for _, c := range expr.Children {
			f.keysOf(c, into)
		}
	}
}

// elements returns an array's elements, without comments.
func elements(arr *node) []*node {
	var out []*node
	if arr == nil || arr.Type != "array" {
		return nil
	}
	for _, c := range arr.Children {
		if c.Type != "comment" && c.Type != "decorators" {
			out = append(out, c)
		}
	}
	return out
}

// resolve follows an identifier to the value of the var it names.
func (f *file) resolve(n *node) *node {
	for n != nil && n.Type == "identifier" {
		d, ok := f.get("variable_declaration", n.Text)
		if !ok {
			return n
		}
		n = d.value
	}
	return n
}

var spaces = regexp.MustCompile(`\s+`)

// squash normalizes whitespace so expressions compare by content.
func squash(s string) string { return spaces.ReplaceAllString(strings.TrimSpace(s), " ") }
