package httpapi_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestUnknownRoutesGetJSON404: every path no route serves, on any method,
// answers the contract's JSON 404 (never ServeMux's plain text, never a
// redirect), under /api/ and elsewhere. The Functions host forwards
// /API/Connect as sent (it matches routes without regard to case): it is
// no route of the handler's.
func TestUnknownRoutesGetJSON404(t *testing.T) {
	f := newFixture(t)
	for _, target := range []string{
		"/favicon.ico", "/api", "/api/", "/api/nope", "/API/connect", "/Api/Connections",
		"/api/connections/u1/", "/api/connections/u1/token/x", "/api/connections/u1/nope",
		"/api//connect", "/api/./connect", "/api/x/../connect", "/refresh/", "/admin/host/status",
	} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			rec := serve(f, method, target, "Bearer "+cmsKey, nil)
			wantError(t, rec, http.StatusNotFound, "not_found")
			if loc := rec.Header().Get("Location"); loc != "" {
				t.Errorf("%s %s redirects to %q", method, target, loc)
			}
		}
	}
}

// TestKnownRoutesWithAnotherMethodGetJSON405: a path some route serves,
// asked with another method, answers 405 method_not_allowed with the
// methods it takes in Allow.
func TestKnownRoutesWithAnotherMethodGetJSON405(t *testing.T) {
	f := newFixture(t)
	for _, tt := range []struct{ method, target, allow string }{
		{http.MethodPost, "/", "GET, HEAD"},
		{http.MethodGet, "/refresh", "POST"},
		{http.MethodGet, "/api/connect-sessions", "POST"},
		{http.MethodPost, "/api/connect", "GET, HEAD"},
		{http.MethodDelete, "/api/callback", "GET, HEAD"},
		{http.MethodDelete, "/api/connections", "GET, HEAD"},
		{http.MethodPut, "/api/connections/u1", "GET, HEAD, DELETE"},
		{http.MethodPatch, "/api/connections/u1", "GET, HEAD, DELETE"},
		{http.MethodGet, "/api/connections/u1/token", "POST"},
	} {
		rec := serve(f, tt.method, tt.target, "Bearer "+cmsKey, nil)
		wantError(t, rec, http.StatusMethodNotAllowed, "method_not_allowed")
		if got := rec.Header().Get("Allow"); got != tt.allow {
			t.Errorf("%s %s: Allow %q, want %q", tt.method, tt.target, got, tt.allow)
		}
	}
}

// TestRepeatedQueryParametersAreRefused: a route that reads a query
// parameter refuses it repeated (the CMS's routes: 400 invalid_request
// naming it; the browser's: their 400 HTML page), and an
// opaque token that arrives comma-joined (how the Functions host passes a
// repeated key) the same way, before anything is read or used up.
func TestRepeatedQueryParametersAreRefused(t *testing.T) {
	f := newFixture(t)
	f.plantSession(t, "42")
	f.plantState(t, "42")
	for _, tt := range []struct{ target, param string }{
		{"/api/connections?status=connected&status=reconnect_required", "status"},
		{"/api/connections?limit=1&limit=2", "limit"},
		{"/api/connections?cursor=a&cursor=b", "cursor"},
		{"/api/connections?cursor=a,b", "cursor"},
		{"/api/connect?session=" + sessionToken + "&session=x", "session"},
		{"/api/connect?session=" + sessionToken + ",x", "session"},
		{"/api/callback?code=" + goodCode + "&state=" + stateToken + "&state=x", "state"},
		{"/api/callback?code=" + goodCode + "&state=" + stateToken + ",x", "state"},
		{"/api/callback?code=" + goodCode + "&code=x&state=" + stateToken, "code"},
		{"/api/callback?error=access_denied&error=x&state=" + stateToken, "error"},
	} {
		rec := serve(f, http.MethodGet, tt.target, "Bearer "+cmsKey, nil)
		if strings.HasPrefix(tt.target, "/api/connections") {
			wantError(t, rec, http.StatusBadRequest, "invalid_request")
			if !strings.Contains(rec.Body.String(), "parameter "+tt.param+" ") {
				t.Errorf("%s: %s does not name %s", tt.target, rec.Body, tt.param)
			}
			continue
		}
		// A browser route answers with its plain HTML page (contract:
		// the link or sign-in cannot be used; no redirect).
		if rec.Code != http.StatusBadRequest || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") || rec.Header().Get("Location") != "" {
			t.Errorf("%s: %d %q %q, want the 400 HTML page", tt.target, rec.Code, rec.Header().Get("Content-Type"), rec.Body)
		}
	}
	if f.pendingUsed(t, "session", sessionToken) || f.pendingUsed(t, "state", stateToken) || f.idp.exchanges != 0 {
		t.Error("a refused request used up the session or state, or exchanged a code")
	}
	// The key is checked first: no hint about the query without it.
	if rec := serve(f, http.MethodGet, "/api/connections?status=a&status=b", "", nil); rec.Code != http.StatusUnauthorized {
		t.Errorf("repeated status without the key: %d, want 401", rec.Code)
	}
	// The host's comma-joined status and limit are simply invalid values
	// whose message names the parameter.
	for _, tt := range []struct{ target, param string }{
		{"/api/connections?status=connected,reconnect_required", "status"},
		{"/api/connections?limit=1,2", "limit"},
	} {
		rec := serve(f, http.MethodGet, tt.target, "Bearer "+cmsKey, nil)
		wantError(t, rec, http.StatusBadRequest, "invalid_request")
		if !strings.Contains(rec.Body.String(), tt.param) {
			t.Errorf("%s: %s does not name %s", tt.target, rec.Body, tt.param)
		}
	}
}
