package app_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/megdocs/msconnector/handler/internal/hosttest"
)

// TestWhatTheHostLetsThrough: the paths and queries the Functions host
// forwards to the handler although no route was meant for them get the
// contract's JSON answers, directly and via the host: a path in no route's
// case or shape is 404 not_found, a known path with another method 405
// method_not_allowed with Allow, a repeated query key (which the host
// passes comma-joined) 400 invalid_request naming the parameter.
func TestWhatTheHostLetsThrough(t *testing.T) {
	s := start(t, nil)
	s.connect(t, "routes-u1", "ada@contoso.com")

	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "/API/Connect"},                         // the host matches it to connect
		{http.MethodGet, "/api/Connections/routes-u1"},           // ... to connection
		{http.MethodPost, "/api/connections/routes-u1/nope"},     // connections/{*rest}
		{http.MethodGet, "/api/connections/routes-u1/token/x"},   //
		{http.MethodDelete, "/api/connections/routes-u1/token/"}, //
	} {
		r := s.cms(t, tc.method, tc.path, nil)
		if r.status != http.StatusNotFound || r.errorCode(t) != "not_found" {
			t.Errorf("%s %s: %d %s, want 404 not_found", tc.method, tc.path, r.status, r.body)
		}
	}
	for _, tc := range []struct{ method, path, allow string }{
		{http.MethodPost, "/api/connections/routes-u1", "GET, HEAD, DELETE"},
		{http.MethodGet, "/api/connections/routes-u1/token", "POST"},
		{http.MethodDelete, "/api/connections/routes-u1/token", "POST"},
	} {
		r := s.cms(t, tc.method, tc.path, nil)
		if r.status != http.StatusMethodNotAllowed || r.errorCode(t) != "method_not_allowed" || r.header.Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d %s (Allow %q), want 405 method_not_allowed, Allow %q", tc.method, tc.path, r.status, r.body, r.header.Get("Allow"), tc.allow)
		}
	}
	for _, tc := range []struct{ path, param string }{
		{"/api/connections?status=connected&status=reconnect_required", "status"},
		{"/api/connections?limit=1&limit=2", "limit"},
	} {
		r := s.cms(t, http.MethodGet, tc.path, nil)
		if r.status != http.StatusBadRequest || r.errorCode(t) != "invalid_request" || !strings.Contains(string(r.body), tc.param) {
			t.Errorf("GET %s: %d %s, want 400 invalid_request naming %s", tc.path, r.status, r.body, tc.param)
		}
	}
	// The browser's routes answer a repeated link or state with their 400
	// HTML page, as for any link or state they cannot use (contract).
	for _, path := range []string{"/api/connect?session=x&session=y", "/api/callback?code=c&state=x&state=y"} {
		r := do(t, noRedirect, http.MethodGet, s.HandlerURL+path, "", nil)
		if r.status != http.StatusBadRequest || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") || r.header.Get("Location") != "" {
			t.Errorf("GET %s: %d %q, want the 400 HTML page", path, r.status, r.header.Get("Content-Type"))
		}
	}
	// The user's connection is untouched by all of it.
	if r := s.cms(t, http.MethodGet, "/api/connections/routes-u1", nil); r.status != http.StatusOK || r.json(t)["status"] != "connected" {
		t.Errorf("routes-u1 afterwards: %d %s", r.status, r.body)
	}
}

// TestTransportModeIsInForce: in via-host mode the stack's requests really
// go through the host model (a path no function matches never reaches the
// handler); directly, the handler answers it.
func TestTransportModeIsInForce(t *testing.T) {
	s := start(t, nil)
	b := newBrowser(t)
	for name, r := range map[string]response{
		"cms":     s.cms(t, http.MethodGet, "/favicon.ico", nil),
		"browser": do(t, b.Client, http.MethodGet, s.HandlerURL+"/favicon.ico", "", nil),
	} {
		host := r.header.Get(hosttest.HostNotFoundHeader) != ""
		switch {
		case viaHost != nil && (!host || r.status != http.StatusNotFound):
			t.Errorf("%s via the host: %d %s, want the host's own 404", name, r.status, r.body)
		case viaHost == nil && (host || r.status != http.StatusNotFound || r.errorCode(t) != "not_found"):
			t.Errorf("%s directly: %d %s, want the handler's 404 not_found", name, r.status, r.body)
		}
	}
}
