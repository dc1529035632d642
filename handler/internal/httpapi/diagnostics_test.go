package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/megdocs/msconnector/handler/internal/diagnostics"
)

type stubDiagnoser struct{ calls int }

func (s *stubDiagnoser) Report(context.Context) diagnostics.Report {
	s.calls++
	return diagnostics.Report{OK: false, CheckedAt: fixedNow, Checks: []diagnostics.Check{{Name: "timer", Detail: "no sweep has finished yet", Fix: "check the timer"}}}
}

func TestDiagnosticsRoute(t *testing.T) {
	f := newFixture(t)
	get := func(h http.Handler, key string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/api/diagnostics", nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}

	// Not built: 503 not_configured, still behind the CMS key.
	if w := get(f.handler, ""); w.Code != http.StatusUnauthorized {
		t.Errorf("no key: %d, want 401", w.Code)
	}
	if w := get(f.handler, cmsKey); w.Code != http.StatusServiceUnavailable {
		t.Errorf("no diagnostics service: %d %s, want 503", w.Code, w.Body)
	}

	d := &stubDiagnoser{}
	f.srv.Diagnostics = d
	h := f.srv.Handler()
	for _, key := range []string{"", "wrong-key"} {
		if w := get(h, key); w.Code != http.StatusUnauthorized || d.calls != 0 {
			t.Errorf("key %q: %d (computed %d times), want 401 before anything is checked", key, w.Code, d.calls)
		}
	}
	w := get(h, cmsKeyPrevious)
	var rep diagnostics.Report
	if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &rep) != nil || rep.OK || len(rep.Checks) != 1 || rep.Checks[0].Fix == "" {
		t.Errorf("with the key: %d %s, want 200 and the report (also when a check fails)", w.Code, w.Body)
	}
	if w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q", w.Header().Get("Cache-Control"))
	}
}
