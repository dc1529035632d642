package djangotest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/azurite"
	"github.com/megdocs/msconnector/handler/internal/devstack"
	"github.com/megdocs/msconnector/handler/internal/pythontest"
)

// SkipEnv is the one explicit opt-out: SKIP_DJANGO=1 skips the Django
// tests. Without it a missing python3-django fails.
const SkipEnv = "SKIP_DJANGO"

// returnURL is the reference project's return view as its tests' client
// names it (plain http is allowed on loopback hosts only).
const returnURL = "http://localhost:8000/microsoft/return/"

func TestMain(m *testing.M) { os.Exit(azurite.RunTests(m)) }

// TestDjangoReferenceIntegration runs `manage.py test microsoft` with the
// connector's URL and CMS API key.
func TestDjangoReferenceIntegration(t *testing.T) {
	py := pythontest.Find(t, SkipEnv, "the Django reference integration's tests", []string{"python3-django", "python3-requests"}, "django", "requests")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	logs := &bytes.Buffer{}
	s, err := devstack.Start(ctx, devstack.Options{
		TablesConnectionString: azurite.ForTest(t),
		WithoutCMS:             true,
		Logs:                   logs,
		Settings:               map[string]string{"ALLOWED_RETURN_URLS": returnURL},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("stack logs:\n%s", logs)
		}
	})

	cmd := exec.CommandContext(ctx, py, "-B", "manage.py", "test", "microsoft", "-v", "2")
	cmd.Dir = filepath.Join(pythontest.RepoRoot(t), "docs", "cms-client", "django")
	cmd.Env = append(os.Environ(),
		"PYTHONDONTWRITEBYTECODE=1",
		"STRICT=1",
		"DJANGO_SETTINGS_MODULE=megdocs_site.settings",
		"MEGDOCS_CONNECTOR_URL="+s.HandlerURL,
		"MEGDOCS_CONNECTOR_KEY="+s.CMSKey,
	)
	out, err := cmd.CombinedOutput()
	t.Logf("%s %s:\n%s", py, strings.Join(cmd.Args[1:], " "), out)
	if err != nil {
		t.Fatalf("the Django tests failed: %v", err)
	}
	if !bytes.Contains(out, []byte("\nOK")) || bytes.Contains(out, []byte("skipped")) {
		t.Fatalf("the Django tests did not all run and pass")
	}
	// The mismatches reached the connector as the security event the
	// contract names, once per direction.
	if n := strings.Count(logs.String(), `"reason":"user_mismatch"`); n != 2 {
		t.Errorf("%d oauth_failed lines with reason user_mismatch in the handler's log, want 2", n)
	}
}

// TestDocEmbedsReferenceCode keeps docs/cms-integration.md's copies of the
// reference integration equal to the files the Django tests exercise: the
// return view, the connect view and connector.py.
func TestDocEmbedsReferenceCode(t *testing.T) {
	root := pythontest.RepoRoot(t)
	read := func(parts ...string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(append([]string{root}, parts...)...))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	doc := read("docs", "cms-integration.md")
	views := read("docs", "cms-client", "django", "microsoft", "views.py")
	for _, tc := range []struct{ name, code string }{
		{"connect_return in views.py", function(t, views, "@login_required\ndef connect_return(")},
		{"connect in views.py", function(t, views, "@login_required\n@require_POST  # with the CSRF token")},
		{"connector.py", read("docs", "cms-client", "django", "microsoft", "connector.py")},
	} {
		if !strings.Contains(doc, "```python\n"+tc.code+"```\n") {
			t.Errorf("docs/cms-integration.md does not hold %s verbatim in a ```python block: copy it into the doc again", tc.name)
		}
	}
}

// function is the top-level Python function of src that starts with start,
// up to the two blank lines after it, with its final newline.
func function(t *testing.T, src, start string) string {
	t.Helper()
	i := strings.Index(src, start)
	if i < 0 {
		t.Fatalf("no %q in views.py", start)
	}
	rest := src[i:]
	if j := strings.Index(rest, "\n\n\n"); j >= 0 {
		return rest[:j+1]
	}
	return rest
}
