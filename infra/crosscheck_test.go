package infra

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// fatalRecorder is a testing.TB whose Fatal ends only the goroutine running
// the check, so a test can see that a cross-check refuses to pass.
type fatalRecorder struct {
	testing.TB
	fatal string
}

func (r *fatalRecorder) Helper() {}
func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *fatalRecorder) Fatal(args ...any) {
	r.fatal = fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *fatalRecorder) Errorf(format string, args ...any) { r.Fatalf(format, args...) }

// mustRefuse runs check with a recorder and returns its failure, failing t
// when the check passed.
func mustRefuse(t *testing.T, what string, check func(testing.TB)) string {
	t.Helper()
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		check(r)
	}()
	<-done
	if r.fatal == "" {
		t.Errorf("%s passed without its source", what)
	}
	return r.fatal
}

// TestCrossChecksFailWithoutTheirSource: each source a cross-check compares
// against, taken away, fails the check instead of letting it pass vacuously.
func TestCrossChecksFailWithoutTheirSource(t *testing.T) {
	empty := t.TempDir()
	// A handler tree whose packages exist but say nothing.
	silent := t.TempDir()
	for _, pkg := range []string{"config", "httpapi", "sweep"} {
		dir := filepath.Join(silent, "handler", "internal", pkg)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "x.go"), []byte("package "+pkg+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, root := range []string{empty, silent} {
		if msg := mustRefuse(t, "handler settings", func(tb testing.TB) { handlerSettingsIn(tb, root) }); !strings.Contains(msg, "handler/internal/config") {
			t.Errorf("settings cross-check failure does not name its source: %q", msg)
		}
		if msg := mustRefuse(t, "handler routes", func(tb testing.TB) { handlerRoutesIn(tb, root) }); !strings.Contains(msg, "handler/internal/httpapi") {
			t.Errorf("route cross-check failure does not name its source: %q", msg)
		}
		if msg := mustRefuse(t, "logged events", func(tb testing.TB) { codeLogIn(tb, root) }); !strings.Contains(msg, "handler") {
			t.Errorf("event cross-check failure does not name its source: %q", msg)
		}
	}
	if msg := mustRefuse(t, "queries", func(tb testing.TB) { loadQueriesIn(tb, empty) }); !strings.Contains(msg, "queries") {
		t.Errorf("query check failure does not name its source: %q", msg)
	}
}
