package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/tablestore/storetest"
)

// userRoutes are every route that takes {user_id} in its path, with a
// body that would be valid for a valid id.
var userRoutes = []struct{ method, suffix, body string }{
	{http.MethodGet, "", ""},
	{http.MethodDelete, "", ""},
	{http.MethodPost, "/token", ""},
	{http.MethodPost, "/complete", `{"connect_code":"` + strings.Repeat("A", 43) + `"}`},
}

// TestRejectedUserIDsOnEveryRoute: every id of every class contract v2
// rejects, path-escaped as a CMS would send it, gets 400 invalid_request
// on every user route, and nothing is read, stored or deleted. "/" alone
// (%2F), which the mux cannot route to {user_id}, included: v1 routed it
// as a user (slashUserID), v2 refuses it like any other.
func TestRejectedUserIDsOnEveryRoute(t *testing.T) {
	f := newFixture(t)
	f.connect(t, "42")
	for _, id := range storetest.RejectedUserIDs() {
		if id == "" || id == "." || id == ".." {
			continue // not a path segment: TestDotSegments
		}
		for _, rt := range userRoutes {
			target := "/api/connections/" + url.PathEscape(id) + rt.suffix
			rec := serve(f, rt.method, target, "Bearer "+cmsKey, []byte(rt.body))
			if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), `"invalid_request"`) {
				t.Errorf("%s %s: %d %s, want 400 invalid_request", rt.method, target, rec.Code, rec.Body)
			}
		}
	}
	if n := f.connections(t); n != 1 {
		t.Errorf("%d connections after the rejected calls, want only 42's", n)
	}
	if _, err := f.store.Get(context.Background(), "42"); err != nil {
		t.Errorf("42's connection: %v", err)
	}
}

// TestDotSegments: "." and ".." escaped as %2E reach the handler as those
// ids and are refused; as literal segments net/http cleans them away and
// nothing reaches a user route.
func TestDotSegments(t *testing.T) {
	f := newFixture(t)
	f.connect(t, "42")
	for _, seg := range []string{"%2E", "%2E%2E", "%2e%2e"} {
		for _, rt := range userRoutes {
			target := "/api/connections/" + seg + rt.suffix
			rec := serve(f, rt.method, target, "Bearer "+cmsKey, []byte(rt.body))
			wantError(t, rec, http.StatusBadRequest, "invalid_request")
		}
	}
	if n := f.connections(t); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

// TestCompleteRoute: the contract's cases of POST .../complete through the
// real routes and error mapping (the race and the mismatch are proven
// end to end in package app and on the service in connectflow).
func TestCompleteRoute(t *testing.T) {
	f := newFixture(t)
	code := f.plantConnect(t, "42")
	bearer := "Bearer " + cmsKey
	for _, tc := range []struct{ name, body string }{
		{"empty", ``}, {"not json", `{"connect_code":`}, {"no code", `{}`}, {"null", `{"connect_code":null}`},
		{"number", `{"connect_code":42}`}, {"array", `["` + code + `"]`},
	} {
		rec := serve(f, http.MethodPost, "/api/connections/42/complete", bearer, []byte(tc.body))
		wantError(t, rec, http.StatusBadRequest, "invalid_request")
	}
	for _, bad := range []string{"", "nope", strings.Repeat("A", 43), code + "A"} {
		rec := serve(f, http.MethodPost, "/api/connections/42/complete", bearer, []byte(`{"connect_code":"`+bad+`"}`))
		wantError(t, rec, http.StatusBadRequest, "invalid_connect_code")
	}
	if rec := serve(f, http.MethodPost, "/api/connections/42/complete", "Bearer wrong", []byte(`{"connect_code":"`+code+`"}`)); rec.Code != http.StatusUnauthorized {
		t.Errorf("wrong key: %d", rec.Code)
	}
	if f.connections(t) != 0 {
		t.Fatal("a refused completion stored a connection")
	}
	rec := serve(f, http.MethodPost, "/api/connections/42/complete", bearer, []byte(`{"connect_code":"`+code+`"}`))
	var st map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &st); rec.Code != http.StatusOK || err != nil || st["user_id"] != "42" || st["status"] != "connected" {
		t.Fatalf("complete: %d %s", rec.Code, rec.Body)
	}
	noTokens(t, rec)
	if rec.Header().Get("Cache-Control") != "no-store" {
		t.Error("complete is cacheable")
	}
	rec = serve(f, http.MethodPost, "/api/connections/42/complete", bearer, []byte(`{"connect_code":"`+code+`"}`))
	wantError(t, rec, http.StatusBadRequest, "invalid_connect_code")

	other := f.plantConnect(t, "m")
	rec = serve(f, http.MethodPost, "/api/connections/v/complete", bearer, []byte(`{"connect_code":"`+other+`"}`))
	wantError(t, rec, http.StatusConflict, "user_mismatch")
	rec = serve(f, http.MethodPost, "/api/connections/m/complete", bearer, []byte(`{"connect_code":"`+other+`"}`))
	wantError(t, rec, http.StatusBadRequest, "invalid_connect_code")
	if n := f.connections(t); n != 1 {
		t.Errorf("%d connections, want only 42's", n)
	}
}

// plantConnect stores a pending connect for userID, as the callback would,
// and returns its connect code.
func (f *fixture) plantConnect(t *testing.T, userID string) string {
	t.Helper()
	code := bearerToken(byte(len(userID) + 10))
	err := f.store.PutPending(context.Background(), connection.Pending{
		Kind: connection.PendingConnect, ID: hashOf(code), UserID: userID,
		Grant: connection.Grant{AccessToken: "secret-access-token", RefreshToken: "secret-refresh-token",
			ExpiresAt: fixedNow.Add(3600e9), Scopes: []string{"User.Read"}, Account: connection.Account{ID: "oid", TenantID: "tid"}},
		CreatedAt: fixedNow, ExpiresAt: fixedNow.Add(600e9),
	})
	if err != nil {
		t.Fatal(err)
	}
	return code
}
