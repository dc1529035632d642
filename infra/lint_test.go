package infra

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// The Bicep linter without the Bicep CLI. infra/bicepconfig.json raises rules
// to error: `bicep build` and so every deployment fail on any of them, and
// nothing here can run Bicep. Each rule configured at error or warning is
// emulated below from its documentation, applied to every parameter, output
// and literal of every file, and each emulation is shown to fail on a file
// that breaks it (TestLintRulesCatchViolations).

// lintRule is one emulated linter rule: it returns the problems in f.
type lintRule struct {
	// source is the rule's documentation.
	source string
	check  func(f *file) []string
}

var lintRules = map[string]lintRule{
	"secure-secrets-in-params": {
		"learn.microsoft.com/azure/azure-resource-manager/bicep/linter-rule-secure-secrets-in-parameters; name pattern and exceptions: shared/facts/azure-functions.md",
		checkSecureSecretsInParams,
	},
	"outputs-should-not-contain-secrets": {
		"learn.microsoft.com/azure/azure-resource-manager/bicep/linter-rule-outputs-should-not-contain-secrets",
		checkOutputsWithoutSecrets,
	},
	"no-hardcoded-env-urls": {
		"learn.microsoft.com/azure/azure-resource-manager/bicep/linter-rule-no-hardcoded-environment-urls (default disallowedhosts and excludedhosts)",
		checkNoHardcodedEnvURLs,
	},
	"no-unused-params": {
		"learn.microsoft.com/azure/azure-resource-manager/bicep/linter-rule-no-unused-parameters",
		func(f *file) []string { return checkUnused(f, "parameter_declaration", "parameter") },
	},
	"no-unused-vars": {
		"learn.microsoft.com/azure/azure-resource-manager/bicep/linter-rule-no-unused-variables",
		func(f *file) []string { return checkUnused(f, "variable_declaration", "variable") },
	},
	"use-secure-value-for-secure-inputs": {
		"learn.microsoft.com/azure/azure-resource-manager/bicep/linter-rule-use-secure-value-for-secure-inputs",
		checkSecureInputs,
	},
}

// secretName is secure-secrets-in-params' pattern: a parameter whose name
// contains one of these words looks like a secret...
var secretName = regexp.MustCompile(`(?i)password|pwd|secret|accountkey|acctkey`)

// ...unless it names a secret rather than holding one.
var secretNameException = regexp.MustCompile(`(?i)secretname|secretversion|secreturi|secreturl|secretpermissions?`)

func looksSecret(name string) bool {
	return secretName.MatchString(name) && !secretNameException.MatchString(name)
}

func isSecure(d decl) bool { return strings.Contains(d.decorate, "@secure()") }

// checkSecureSecretsInParams: a string or object parameter whose name looks
// like a secret must be @secure().
func checkSecureSecretsInParams(f *file) []string {
	var out []string
	for _, p := range f.ofKind("parameter_declaration") {
		typ := strings.TrimSuffix(p.typ, "?")
		if (typ == "string" || typ == "object") && looksSecret(p.name) && !isSecure(p) {
			out = append(out, fmt.Sprintf("%s:%d: parameter %s looks like a secret (name matches %s) but is not @secure()", f.rel, p.node.Line, p.name, secretName))
		}
	}
	return out
}

// checkOutputsWithoutSecrets: no output named like a secret, none using a
// @secure() parameter, none calling a list*() function.
func checkOutputsWithoutSecrets(f *file) []string {
	var out []string
	secure := map[string]bool{}
	for _, p := range f.ofKind("parameter_declaration") {
		if isSecure(p) {
			secure[p.name] = true
		}
	}
	list := regexp.MustCompile(`(?i)(^|[^A-Za-z0-9_])list[A-Za-z0-9]*\(`)
	for _, o := range f.ofKind("output_declaration") {
		if looksSecret(o.name) {
			out = append(out, fmt.Sprintf("%s:%d: output %s is named like a secret", f.rel, o.node.Line, o.name))
		}
		if o.value == nil {
			continue
		}
		if list.MatchString(o.value.Text) {
			out = append(out, fmt.Sprintf("%s:%d: output %s calls a list*() function", f.rel, o.node.Line, o.name))
		}
		o.value.walk(func(n *node) bool {
			if n.Type == "identifier" && secure[n.Text] {
				out = append(out, fmt.Sprintf("%s:%d: output %s uses the @secure() parameter %s", f.rel, o.node.Line, o.name, n.Text))
			}
			return true
		})
	}
	return out
}

// The rule's default configuration. bicepconfig.json may replace these lists;
// TestLintConfiguration fails if it does, so the defaults are the truth here.
var (
	disallowedHosts = []string{
		"gallery.azure.com", "management.core.windows.net", "management.azure.com", "database.windows.net",
		"core.windows.net", "login.microsoftonline.com", "graph.windows.net", "trafficmanager.net",
		"datalake.azure.net", "azuredatalakestore.net", "azuredatalakeanalytics.net", "vault.azure.net",
		"api.loganalytics.io", "asazure.windows.net", "region.asazure.windows.net", "batch.core.windows.net",
	}
	excludedHosts = []string{"schema.management.azure.com"}
)

// checkNoHardcodedEnvURLs: no string literal (or literal part of an
// interpolated string) names a host that differs between Azure clouds.
func checkNoHardcodedEnvURLs(f *file) []string {
	var out []string
	f.root.walk(func(n *node) bool {
		if n.Type != "string_content" {
			return true
		}
		s := strings.ToLower(n.Text)
		for _, ex := range excludedHosts {
			s = strings.ReplaceAll(s, ex, "")
		}
		for _, h := range disallowedHosts {
			re := regexp.MustCompile(`(^|[^a-z0-9-])` + regexp.QuoteMeta(h) + `($|[^a-z0-9-])`)
			if re.MatchString(s) {
				out = append(out, fmt.Sprintf("%s:%d: literal %q names %s: use environment() (or a resource's endpoints)", f.rel, n.Line, n.Text, h))
				break
			}
		}
		return true
	})
	return out
}

// checkUnused: every parameter (variable) of a .bicep file is referenced.
// Object property keys and the declarations' own names are not references.
func checkUnused(f *file, kind, what string) []string {
	if strings.HasSuffix(f.rel, ".bicepparam") {
		return nil
	}
	used := map[string]bool{}
	var visit func(n *node, skipFirst bool)
	visit = func(n *node, skipFirst bool) {
		for i, c := range n.Children {
			// The key of a property (not a nested resource, which is the
			// property's only child) and a declaration's own name.
			if i == 0 && skipFirst && (n.Type != "object_property" || len(n.Children) > 1) {
				continue
			}
			if c.Type == "identifier" {
				used[c.Text] = true
			}
			switch c.Type {
			case "object_property", "parameter_declaration", "variable_declaration", "output_declaration",
				"resource_declaration", "module_declaration", "type_declaration", "function_declaration":
				visit(c, true)
			default:
				visit(c, false)
			}
		}
	}
	visit(f.root, false)
	var out []string
	for _, d := range f.ofKind(kind) {
		// An @export()ed declaration is used by the files importing it.
		if !used[d.name] && !strings.Contains(d.decorate, "@export()") {
			out = append(out, fmt.Sprintf("%s:%d: %s %s is never used", f.rel, d.node.Line, what, d.name))
		}
	}
	return out
}

// secureInputs are resource properties the Azure types mark secure.
var secureInputs = map[string]bool{"adminPassword": true, "password": true, "clientSecret": true, "protectedSettings": true, "secretValue": true}

// checkSecureInputs: a property the platform treats as secure gets a
// @secure() parameter, never a literal or a plain value.
func checkSecureInputs(f *file) []string {
	secure := map[string]bool{}
	for _, p := range f.ofKind("parameter_declaration") {
		if isSecure(p) {
			secure[p.name] = true
		}
	}
	var out []string
	f.root.walk(func(n *node) bool {
		if n.Type == "object_property" && len(n.Children) == 2 && secureInputs[n.Children[0].Text] {
			if v := n.Children[1]; v.Type != "identifier" || !secure[v.Text] {
				out = append(out, fmt.Sprintf("%s:%d: %s is a secure input; give it a @secure() parameter", f.rel, n.Line, n.Children[0].Text))
			}
		}
		return true
	})
	return out
}

// configuredRules reads the rules bicepconfig.json sets to error or warning.
func configuredRules(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "infra", "bicepconfig.json"))
	if err != nil {
		t.Fatalf("infra/bicepconfig.json: %v", err)
	}
	var cfg struct {
		Analyzers struct {
			Core struct {
				Enabled *bool                      `json:"enabled"`
				Rules   map[string]json.RawMessage `json:"rules"`
			} `json:"core"`
		} `json:"analyzers"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("infra/bicepconfig.json: %v", err)
	}
	if cfg.Analyzers.Core.Enabled != nil && !*cfg.Analyzers.Core.Enabled {
		t.Fatal("bicepconfig.json turns the linter off")
	}
	out := map[string]string{}
	for name, body := range cfg.Analyzers.Core.Rules {
		var r struct {
			Level           string   `json:"level"`
			DisallowedHosts []string `json:"disallowedhosts"`
			ExcludedHosts   []string `json:"excludedhosts"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatalf("bicepconfig.json rule %s: %v", name, err)
		}
		if len(r.DisallowedHosts) > 0 || len(r.ExcludedHosts) > 0 {
			t.Errorf("bicepconfig.json changes %s's host lists; update disallowedHosts/excludedHosts in lint_test.go to match", name)
		}
		if r.Level == "error" || r.Level == "warning" {
			out[name] = r.Level
		}
	}
	if len(out) == 0 {
		t.Fatal("bicepconfig.json configures no rule at error or warning: nothing to check against")
	}
	return out
}

// TestLintConfiguration: every rule bicepconfig.json raises is emulated here,
// and the three the issue names are raised.
func TestLintConfiguration(t *testing.T) {
	rules := configuredRules(t)
	for name := range rules {
		if _, ok := lintRules[name]; !ok {
			t.Errorf("bicepconfig.json sets %s to %s, which lint_test.go does not emulate: add it, or `make test` cannot catch what breaks the build", name, rules[name])
		}
	}
	for _, name := range []string{"secure-secrets-in-params", "outputs-should-not-contain-secrets", "no-hardcoded-env-urls"} {
		if rules[name] != "error" {
			t.Errorf("bicepconfig.json: %s is %q, want error", name, rules[name])
		}
	}
}

// TestLintRules applies every configured rule to every Bicep file.
func TestLintRules(t *testing.T) {
	rules := configuredRules(t)
	files := bicepFiles(t)
	if len(files) < 9 {
		t.Fatalf("found %d Bicep files, want main, its parameters and the modules", len(files))
	}
	for _, name := range sortedKeys(rules) {
		rule, ok := lintRules[name]
		if !ok {
			continue // TestLintConfiguration reports it
		}
		t.Run(name, func(t *testing.T) {
			for _, path := range files {
				rel, _ := filepath.Rel(filepath.Join(repoRoot(t), "infra"), path)
				f := loadFile(t, filepath.ToSlash(rel))
				for _, p := range rule.check(f) {
					t.Errorf("%s (%s, %s): %s", name, rules[name], rule.source, p)
				}
			}
		})
	}
}

// parseSource parses a Bicep snippet written to a temporary file.
func parseSource(t *testing.T, name, src string) *file {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runSyntax(t, "tree", path)
	if code != 0 {
		t.Fatalf("parse %s (exit %d):\n%s", name, code, stderr)
	}
	var n node
	if err := json.Unmarshal([]byte(stdout), &n); err != nil {
		t.Fatal(err)
	}
	return &file{rel: name, root: &n, decls: declarations(&n), source: src}
}

// TestLintRulesCatchViolations proves each emulation can fail, with the
// defect of issue 14 among them (param secretsCacheTtl), and passes the
// forms the rules allow.
func TestLintRulesCatchViolations(t *testing.T) {
	tests := []struct {
		rule, bad, good string
	}{
		{"secure-secrets-in-params",
			"param secretsCacheTtl string = '5m'\nparam dbPwd object\nparam x string\n",
			"@secure()\nparam clientSecret string\nparam keyVaultSecretName string\nparam secretUri string\nparam cacheTtl string\nparam secretCount int\n"},
		{"outputs-should-not-contain-secrets",
			"@secure()\nparam k string\nresource st 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {\n  name: 'x'\n}\noutput adminPassword string = 'x'\noutput a string = 'v ${k}'\noutput b string = st.listKeys().keys[0].value\n",
			"resource st 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {\n  name: 'x'\n}\noutput storageId string = st.id\noutput keyVaultSecretName string = 'n'\n"},
		{"no-hardcoded-env-urls",
			"var a = 'https://management.azure.com/x'\nvar b = 'https://${a}.blob.core.windows.net'\nvar c = 'login.microsoftonline.com'\noutput o string = '${a}${b}${c}'\n",
			"var a = 'https://x.blob.${environment().suffixes.storage}'\nvar s = 'https://schema.management.azure.com/schemas/x'\nvar g = 'https://graph.microsoft.com'\noutput o string = '${a}${s}${g}'\n"},
		{"no-unused-params",
			"param used string\nparam unused string\noutput o string = used\n",
			"param name string\nparam principalId string\nvar v = {\n  name: name\n  principalId: principalId\n}\noutput o object = v\n"},
		{"no-unused-vars",
			"var used = 1\nvar unused = 2\noutput o int = used\n",
			"var a = 1\nvar b = {\n  a: a\n}\noutput o object = b\n"},
		{"use-secure-value-for-secure-inputs",
			"param p string\nvar v = {\n  adminPassword: p\n  protectedSettings: {}\n}\noutput o object = v\n",
			"@secure()\nparam p string\nvar v = {\n  adminPassword: p\n}\noutput o int = length(v)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.rule, func(t *testing.T) {
			check := lintRules[tt.rule].check
			bad := check(parseSource(t, "bad.bicep", tt.bad))
			if len(bad) == 0 {
				t.Fatalf("%s found nothing in:\n%s", tt.rule, tt.bad)
			}
			if good := check(parseSource(t, "good.bicep", tt.good)); len(good) > 0 {
				t.Errorf("%s rejects allowed Bicep: %v", tt.rule, good)
			}
		})
	}
	// Each offending declaration is reported, not just the first.
	got := checkSecureSecretsInParams(parseSource(t, "p.bicep", "param secretsCacheTtl string = '5m'\nparam dbPwd object\nparam x string\n"))
	sort.Strings(got)
	if len(got) != 2 || !strings.Contains(strings.Join(got, "\n"), "secretsCacheTtl") {
		t.Errorf("secure-secrets-in-params: %v, want secretsCacheTtl and dbPwd", got)
	}
	got = checkNoHardcodedEnvURLs(parseSource(t, "u.bicep", "var a = 'https://management.azure.com/x'\nvar b = 'https://${a}.blob.core.windows.net'\nvar c = 'login.microsoftonline.com'\noutput o string = '${a}${b}${c}'\n"))
	if len(got) != 3 {
		t.Errorf("no-hardcoded-env-urls: %v, want three literals", got)
	}
}
