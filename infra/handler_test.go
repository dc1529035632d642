package infra

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// What the handler reads and serves, taken from its source so the
// cross-checks follow the code: setting names from handler/internal/config
// (plus any getenv call with a literal elsewhere in handler/), routes from
// the patterns in handler/internal/httpapi. A cross-check never passes
// without its source: when a package is missing or yields nothing, the test
// fails (TestCrossChecksFailWithoutTheirSource).

// contractSettings are the contract's configuration names the handler reads
// (REFRESH_SCHEDULE is read by the host, through function.json), with the
// settings issue 5 and 8 add and the secrets' environment fallbacks.
var contractSettings = []string{
	"FUNCTIONS_CUSTOMHANDLER_PORT",
	"KEY_VAULT_URL", "TABLES_ENDPOINT", "TABLES_CONNECTION_STRING",
	"MICROSOFT_CLIENT_ID", "MICROSOFT_OAUTH_CALLBACK_URL", "MICROSOFT_TENANT",
	"MICROSOFT_AUTHORITY_HOST", "MICROSOFT_GRAPH_URL", "MICROSOFT_SCOPES",
	"MICROSOFT_CLIENT_AUTH", "AZURE_CLIENT_ID",
	"ALLOWED_RETURN_URLS", "PUBLIC_BASE_URL",
	"REFRESH_MARGIN", "REFRESH_MAX_AGE", "REFRESH_LOOKAHEAD", "REFRESH_CONCURRENCY", "REFRESH_DEADLINE",
	"CMS_WEBHOOK_URL", "SECRETS_CACHE_TTL",
}

// secretFallbacks are the contract's environment fallbacks for secrets: read
// only without KEY_VAULT_URL (local development), never app settings.
var secretFallbacks = []string{
	"MICROSOFT_CLIENT_SECRET", "TOKEN_ENCRYPTION_KEY", "CMS_API_KEY", "CMS_API_KEY_PREVIOUS", "CMS_WEBHOOK_SECRET",
}

// contractDefaults are the contract's defaults for settings with a plain value.
var contractDefaults = map[string]string{
	"MICROSOFT_GRAPH_URL": "https://graph.microsoft.com",
	"MICROSOFT_SCOPES":    "User.Read Files.ReadWrite.All offline_access",
	"REFRESH_SCHEDULE":    "0 */5 * * * *",
	"REFRESH_MARGIN":      "5m",
	"REFRESH_MAX_AGE":     "24h",
	"REFRESH_LOOKAHEAD":   "10m",
	"REFRESH_CONCURRENCY": "16",
	"REFRESH_DEADLINE":    "4m",
	"SECRETS_CACHE_TTL":   "5m",
}

// route is one handler route: a method and a Go 1.22 ServeMux path pattern.
type route struct{ method, path string }

func (r route) String() string { return r.method + " " + r.path }

var (
	settingName  = regexp.MustCompile(`^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$`)
	routeLiteral = regexp.MustCompile(`^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) (/\S*)$`)
)

// goFiles parses the non-test Go files of one directory; nil when there are none.
func goFiles(t testing.TB, dir string) []*ast.File {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	var files []*ast.File
	fset := token.NewFileSet()
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatalf("parse %s: %v", p, err)
		}
		files = append(files, f)
	}
	return files
}

// stringLiterals calls fn with every string literal's value.
func stringLiterals(files []*ast.File, fn func(string)) {
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if v, err := strconv.Unquote(lit.Value); err == nil {
					fn(v)
				}
			}
			return true
		})
	}
}

// stringConsts maps a package's string constants to their values.
func stringConsts(files []*ast.File) map[string]string {
	out := map[string]string{}
	for _, f := range files {
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if i < len(vs.Values) {
						if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
							if v, err := strconv.Unquote(lit.Value); err == nil {
								out[name.Name] = v
							}
						}
					}
				}
			}
		}
	}
	return out
}

// handlerSettings returns every setting name the handler reads, with where
// it was found, and whether it came from the handler's source.
func handlerSettings(t testing.TB) (map[string]string, bool) {
	t.Helper()
	return handlerSettingsIn(t, repoRoot(t))
}

func handlerSettingsIn(t testing.TB, root string) (map[string]string, bool) {
	t.Helper()
	config := goFiles(t, filepath.Join(root, "handler", "internal", "config"))
	if len(config) == 0 {
		t.Fatalf("handler/internal/config has no Go files: the settings cross-check has nothing to compare against")
	}
	out := map[string]string{}
	stringLiterals(config, func(v string) {
		if settingName.MatchString(v) {
			out[v] = "handler/internal/config"
		}
	})
	// Settings whose names are not upper case (AzureWebJobsStorage...) are
	// found by the config table's Name fields.
	for _, f := range config {
		ast.Inspect(f, func(n ast.Node) bool {
			if kv, ok := n.(*ast.KeyValueExpr); ok {
				if key, ok := kv.Key.(*ast.Ident); ok && key.Name == "Name" {
					if lit, ok := kv.Value.(*ast.BasicLit); ok && lit.Kind == token.STRING {
						if v, err := strconv.Unquote(lit.Value); err == nil && v != "" && !strings.ContainsAny(v, " /") {
							out[v] = "handler/internal/config"
						}
					}
				}
			}
			return true
		})
	}
	// The secrets' environment fallback names.
	stringLiterals(goFiles(t, filepath.Join(root, "handler", "internal", "secrets")), func(v string) {
		if settingName.MatchString(v) {
			out[v] = "handler/internal/secrets"
		}
	})
	// Any other package reading the environment directly, by literal or
	// constant name. Dev-only packages (never deployed) are left out.
	skip := map[string]bool{"cmd": true, "azurite": true, "devidp": true, "devstack": true, "democms": true, "pythontest": true, "config": true, "secrets": true}
	err := filepath.WalkDir(filepath.Join(root, "handler"), func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		if skip[d.Name()] {
			return filepath.SkipDir
		}
		files := goFiles(t, path)
		consts := stringConsts(files)
		rel, _ := filepath.Rel(root, path)
		for _, f := range files {
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || len(call.Args) == 0 {
					return true
				}
				var fn string
				switch x := call.Fun.(type) {
				case *ast.Ident:
					fn = x.Name
				case *ast.SelectorExpr:
					fn = x.Sel.Name
				}
				if fn != "getenv" && fn != "Getenv" && fn != "LookupEnv" {
					return true
				}
				var name string
				switch a := call.Args[0].(type) {
				case *ast.BasicLit:
					name, _ = strconv.Unquote(a.Value)
				case *ast.Ident:
					name = consts[a.Name]
				}
				if name != "" {
					out[name] = filepath.ToSlash(rel)
				}
				return true
			})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("handler/internal/config names no setting: the settings cross-check has nothing to compare against")
	}
	return out, true
}

// handlerDefaults returns config.Settings' defaults (Name -> Default), or the
// contract's when the package is not there yet.
func handlerDefaults(t testing.TB) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range contractDefaults {
		out[k] = v
	}
	files := goFiles(t, filepath.Join(repoRoot(t), "handler", "internal", "config"))
	if len(files) == 0 {
		t.Fatalf("handler/internal/config has no Go files: the defaults cross-check has nothing to compare against")
	}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			var name, def string
			for _, e := range lit.Elts {
				kv, ok := e.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				key, _ := kv.Key.(*ast.Ident)
				val, _ := kv.Value.(*ast.BasicLit)
				if key == nil || val == nil || val.Kind != token.STRING {
					continue
				}
				v, _ := strconv.Unquote(val.Value)
				switch key.Name {
				case "Name":
					name = v
				case "Default":
					def = v
				}
			}
			if settingName.MatchString(name) && def != "" {
				out[name] = def
			}
			return true
		})
	}
	return out
}

// handlerRoutes returns the route patterns registered in httpapi, and
// whether they came from its source.
func handlerRoutes(t testing.TB) ([]route, bool) {
	t.Helper()
	return handlerRoutesIn(t, repoRoot(t))
}

func handlerRoutesIn(t testing.TB, root string) ([]route, bool) {
	t.Helper()
	files := goFiles(t, filepath.Join(root, "handler", "internal", "httpapi"))
	if len(files) == 0 {
		t.Fatalf("handler/internal/httpapi has no Go files: the route cross-check has nothing to compare against")
	}
	seen := map[route]bool{}
	var out []route
	stringLiterals(files, func(v string) {
		if m := routeLiteral.FindStringSubmatch(v); m != nil {
			r := route{m[1], m[2]}
			if !seen[r] {
				seen[r] = true
				out = append(out, r)
			}
		}
	})
	if len(out) == 0 {
		t.Fatalf("handler/internal/httpapi registers no \"METHOD /path\" patterns: the route cross-check cannot run")
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out, true
}

// samplePath turns a ServeMux pattern into a concrete path it matches.
func samplePath(pattern string) string {
	segs := strings.Split(pattern, "/")
	for i, s := range segs {
		switch {
		case s == "{$}":
			segs[i] = ""
		case strings.HasPrefix(s, "{") && strings.HasSuffix(s, "...}"):
			segs[i] = "a/b"
		case strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}"):
			segs[i] = "x"
		}
	}
	return strings.Join(segs, "/")
}

// docTable returns the first column (a `NAME` in backticks) of the table
// under the given "## " heading of docs/deploy.md.
func docTable(t testing.TB, heading string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "deploy.md"))
	if err != nil {
		t.Fatalf("docs/deploy.md: %v", err)
	}
	var out []string
	in := false
	cell := regexp.MustCompile("^\\|\\s*`([^`]+)`\\s*\\|")
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "## ") {
			in = strings.TrimSpace(strings.TrimPrefix(line, "## ")) == heading
			continue
		}
		if in {
			if m := cell.FindStringSubmatch(line); m != nil {
				out = append(out, m[1])
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("docs/deploy.md: no table rows under %q", "## "+heading)
	}
	return out
}
