package httpapi_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestSlashAloneIsAUserID: "/" is a valid user_id (contract: any 1-256
// bytes of UTF-8 without control characters, "/" included), path-escaped as
// %2F. ServeMux alone takes that segment for a trailing slash and answers
// 404 (found by FuzzUserIDPath, testdata/fuzz/FuzzUserIDPath/199c2c84b007b8d1);
// every user route must reach the user "/" and log it as such.
func TestSlashAloneIsAUserID(t *testing.T) {
	f := newFixture(t)
	f.connect(t, "/")
	bearer := "Bearer " + cmsKey
	for _, target := range []string{"/api/connections/%2F", "/api/connections/%2f"} {
		rec := serve(f, http.MethodGet, target, bearer, nil)
		var got struct {
			UserID string `json:"user_id"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &got); rec.Code != http.StatusOK || err != nil || got.UserID != "/" {
			t.Errorf("GET %s: %d %s", target, rec.Code, rec.Body)
		}
	}
	if rec := serve(f, http.MethodPost, "/api/connections/%2F/token", bearer, nil); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "refreshed-access-token") {
		t.Errorf("POST token: %d %s", rec.Code, rec.Body)
	}
	other := serve(f, http.MethodPut, "/api/connections/42", bearer, nil)
	if rec := serve(f, http.MethodPut, "/api/connections/%2F", bearer, nil); rec.Code != other.Code || rec.Body.String() != other.Body.String() {
		t.Errorf("PUT: %d %s, want what any other user gets: %d %s", rec.Code, rec.Body, other.Code, other.Body)
	}
	if rec := serve(f, http.MethodGet, "/api/connections/%2F/", bearer, nil); rec.Code != http.StatusNotFound {
		t.Errorf("GET with a trailing slash: %d, want 404", rec.Code)
	}
	if rec := serve(f, http.MethodGet, "/api/connections/%2F", "Bearer wrong", nil); rec.Code != http.StatusUnauthorized {
		t.Errorf("wrong key: %d, want 401", rec.Code)
	}
	if rec := serve(f, http.MethodDelete, "/api/connections/%2F", bearer, nil); rec.Code != http.StatusNoContent {
		t.Errorf("DELETE: %d %s", rec.Code, rec.Body)
	}
	if rec := serve(f, http.MethodGet, "/api/connections/%2F", bearer, nil); rec.Code != http.StatusNotFound {
		t.Errorf("GET after DELETE: %d %s", rec.Code, rec.Body)
	}
	logs := f.logs.String()
	if !strings.Contains(logs, `"user_id":"/"`) || !strings.Contains(logs, `"route":"POST /api/connections/{user_id}/token"`) {
		t.Errorf("request lines do not name the user and route:\n%s", logs)
	}
}
