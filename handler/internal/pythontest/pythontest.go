// Package pythontest finds what the tests of the CMS-side Python code need:
// a python3 that can import the given modules, and the repository root that
// holds docs/cms-client. Only cmsclienttest and djangotest use it.
// Development tooling: never packaged.
package pythontest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Find returns a python3 that can import every module in modules: $PYTHON
// when set, else python3 on PATH, else Debian's /usr/bin/python3. With
// skipEnv=1 in the environment the test is skipped; a missing interpreter
// or module fails it with what to install (debs: the Debian packages).
func Find(t testing.TB, skipEnv, what string, debs []string, modules ...string) string {
	t.Helper()
	if os.Getenv(skipEnv) == "1" {
		t.Skipf("%s=1: skipping %s", skipEnv, what)
	}
	candidates := []string{"python3", "/usr/bin/python3"}
	if p := os.Getenv("PYTHON"); p != "" {
		candidates = []string{p}
	}
	var tried []string
	for _, c := range candidates {
		p, err := exec.LookPath(c)
		if err != nil {
			tried = append(tried, c+": not found")
			continue
		}
		out, err := exec.Command(p, "-c", "import "+strings.Join(modules, ", ")).CombinedOutput()
		if err == nil {
			return p
		}
		tried = append(tried, fmt.Sprintf("%s: %s", p, lastLine(out)))
	}
	t.Fatalf("no python3 that can import %s (%s).\n"+
		"Run `make test-deps` (installs Debian's %s; needs root) or `apt-get install %s`; %s=1 skips %s explicitly.",
		strings.Join(modules, ", "), strings.Join(tried, "; "), strings.Join(debs, " and "), strings.Join(debs, " "), skipEnv, what)
	return ""
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// RepoRoot is the directory above the working directory that holds go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal(errors.New("go.mod not found above the working directory"))
		}
		dir = parent
	}
}
