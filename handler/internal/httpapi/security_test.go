package httpapi_test

import (
	"bytes"
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/httpapi"
)

// connect stores a connection for userID whose token is due, so the token
// route refreshes.
func (f *fixture) connect(t *testing.T, userID string) {
	t.Helper()
	_, err := f.store.Create(context.Background(), connection.Connection{
		UserID: userID, Status: connection.StatusConnected, AccessToken: "secret-access-token", RefreshToken: "secret-refresh-token",
		AccessTokenExpiresAt: fixedNow.Add(time.Minute), ConnectedAt: fixedNow, LastRefreshedAt: fixedNow,
	})
	if err != nil {
		t.Fatal(err)
	}
}

func serve(f *fixture, method, target, auth string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	f.handler.ServeHTTP(rec, req)
	return rec
}

// TestCMSResponsesAreNeverCached: every CMS response, success or error,
// and above all the token API's, carries Cache-Control: no-store (RFC 6749
// 5.1 for responses holding tokens), and no CMS response carries the
// refresh token.
func TestCMSResponsesAreNeverCached(t *testing.T) {
	f := newFixture(t)
	f.connect(t, "42")
	bearer := "Bearer " + cmsKey
	for _, tc := range []struct {
		method, target, auth string
		body                 string
		status               int
	}{
		{http.MethodPost, "/api/connections/42/token", bearer, "", http.StatusOK},
		{http.MethodGet, "/api/connections/42", bearer, "", http.StatusOK},
		{http.MethodGet, "/api/connections?limit=10", bearer, "", http.StatusOK},
		{http.MethodPost, "/api/connect-sessions", bearer, `{"user_id":"42","return_url":"` + allowedReturn + `"}`, http.StatusCreated},
		{http.MethodPost, "/api/connections/nobody/token", bearer, "", http.StatusNotFound},
		{http.MethodPost, "/api/connections/42/token", "Bearer wrong", "", http.StatusUnauthorized},
		{http.MethodDelete, "/api/connections/42", bearer, "", http.StatusNoContent},
	} {
		rec := serve(f, tc.method, tc.target, tc.auth, []byte(tc.body))
		if rec.Code != tc.status {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.target, rec.Code, rec.Body, tc.status)
		}
		if got := rec.Header().Get("Cache-Control"); got != "no-store" {
			t.Errorf("%s %s: Cache-Control %q, want no-store", tc.method, tc.target, got)
		}
		if strings.Contains(rec.Body.String(), "secret-refresh-token") {
			t.Errorf("%s %s: the response carries the refresh token: %s", tc.method, tc.target, rec.Body)
		}
	}
}

// TestBodiesOverTheLimitAreRefused: a body over 64 KiB is 400
// invalid_request on both routes that read one, and a body of exactly
// 64 KiB is still read.
func TestBodiesOverTheLimitAreRefused(t *testing.T) {
	f := newFixture(t)
	f.connect(t, "42")
	bearer := "Bearer " + cmsKey
	valid := `{"user_id":"42","return_url":"` + allowedReturn + `"}`
	atLimit := valid + strings.Repeat(" ", httpapi.MaxBody-len(valid))
	if rec := serve(f, http.MethodPost, "/api/connect-sessions", bearer, []byte(atLimit)); rec.Code != http.StatusCreated {
		t.Errorf("a 64 KiB body: %d %s", rec.Code, rec.Body)
	}
	over := []byte(atLimit + " ")
	if rec := serve(f, http.MethodPost, "/api/connect-sessions", bearer, over); rec.Code != http.StatusBadRequest {
		t.Errorf("connect-sessions with 64 KiB + 1: %d %s", rec.Code, rec.Body)
	} else {
		wantError(t, rec, http.StatusBadRequest, "invalid_request")
	}
	rec := serve(f, http.MethodPost, "/api/connections/42/token", bearer, bytes.Repeat([]byte("x"), httpapi.MaxBody+1))
	wantError(t, rec, http.StatusBadRequest, "invalid_request")
}

// TestEmptyKeysAcceptNothing: an unset previous key (the normal state) or
// an empty current key never matches an empty or blank bearer.
func TestEmptyKeysAcceptNothing(t *testing.T) {
	for _, keys := range [][2]string{{cmsKey, ""}, {"", ""}, {"", cmsKeyPrevious}} {
		f := newFixture(t)
		f.srv.Keys = func(context.Context) (string, string, error) { return keys[0], keys[1], nil }
		h := f.srv.Handler()
		for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer  ", "bearer \t", "Basic " + cmsKey} {
			req := httptest.NewRequest(http.MethodGet, "/api/connections/42", nil)
			req.Header["Authorization"] = []string{auth}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusUnauthorized {
				t.Errorf("keys %q, Authorization %q: %d, want 401", keys, auth, rec.Code)
			}
		}
	}
}

// TestCMSKeyIsComparedInConstantTime reads the package's source: the CMS
// key check goes through keyMatches, which compares SHA-256 digests of the
// given key and of both accepted keys with crypto/subtle (so neither the
// keys' lengths nor the position of the first difference shows in the
// timing), and no code of the package compares a key with == or !=. A
// timing test would be flaky; this fails as soon as someone "simplifies"
// the comparison.
func TestCMSKeyIsComparedInConstantTime(t *testing.T) {
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var keyMatches, cms *ast.FuncDecl
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		file, err := parser.ParseFile(fset, name, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			if fd, ok := n.(*ast.FuncDecl); ok {
				switch fd.Name.Name {
				case "keyMatches":
					keyMatches = fd
				case "requireCMSKey":
					cms = fd
				}
			}
			// Anywhere in the package: a key is never compared directly.
			if be, ok := n.(*ast.BinaryExpr); ok && (be.Op == token.EQL || be.Op == token.NEQ) {
				for _, side := range []ast.Expr{be.X, be.Y} {
					if id, ok := side.(*ast.Ident); ok && isKeyName(id.Name) && !isLiteral(be.X) && !isLiteral(be.Y) {
						t.Errorf("%s: %s compared with %s", fset.Position(be.Pos()), id.Name, be.Op)
					}
				}
			}
			return true
		})
	}
	if keyMatches == nil || cms == nil {
		t.Fatal("no keyMatches or requireCMSKey function: the check moved, update this test")
	}
	calls := map[string]int{}
	ast.Inspect(keyMatches.Body, func(n ast.Node) bool {
		if ce, ok := n.(*ast.CallExpr); ok {
			if sel, ok := ce.Fun.(*ast.SelectorExpr); ok {
				if pkg, ok := sel.X.(*ast.Ident); ok {
					calls[pkg.Name+"."+sel.Sel.Name]++
				}
			}
		}
		if be, ok := n.(*ast.BinaryExpr); ok && (be.Op == token.EQL || be.Op == token.NEQ) && !isLiteral(be.X) && !isLiteral(be.Y) {
			t.Errorf("keyMatches compares %s with %s", fset.Position(be.Pos()), be.Op)
		}
		return true
	})
	if calls["subtle.ConstantTimeCompare"] < 2 || calls["sha256.Sum256"] < 3 {
		t.Errorf("keyMatches calls %v: want sha256.Sum256 of all three keys and subtle.ConstantTimeCompare for both accepted keys", calls)
	}
	usesKeyMatches := false
	ast.Inspect(cms.Body, func(n ast.Node) bool {
		if ce, ok := n.(*ast.CallExpr); ok {
			if id, ok := ce.Fun.(*ast.Ident); ok && id.Name == "keyMatches" {
				usesKeyMatches = true
			}
		}
		return true
	})
	if !usesKeyMatches {
		t.Error("the requireCMSKey middleware does not check the key with keyMatches")
	}
}

func isKeyName(name string) bool {
	switch name {
	case "given", "current", "previous", "key", "cur", "prev":
		return true
	}
	return false
}

func isLiteral(e ast.Expr) bool {
	_, ok := e.(*ast.BasicLit)
	return ok
}
