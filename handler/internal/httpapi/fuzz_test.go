package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/megdocs/msconnector/handler/internal/connectflow"
	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/httpapi"
)

// Every target drives the real routes through Server.Handler (middleware,
// CMS key check, error mapping, panic recovery) over a memstore, so what
// they prove holds for the handler Azure runs. The seed corpora are in
// testdata/fuzz/<target>; plain `go test` runs them.

// FuzzCreateSession: POST /api/connect-sessions with any Authorization
// header and any body never answers 5xx; 401 exactly when the CMS key is
// missing or wrong; 201 exactly for a body the contract accepts (and then a
// session is stored for that user and return URL); otherwise 400 with the
// contract's code (return_url_not_allowed only for a well-formed request
// whose return_url is not allowed).
func FuzzCreateSession(f *testing.F) {
	bearer := "Bearer " + cmsKey
	f.Add(bearer, []byte(`{"user_id":"42","return_url":"https://cms.example.test/settings/?tab=microsoft","login_hint":"ada@contoso.com"}`))
	f.Add(bearer, []byte(`{"user_id":"a/b#c?d\\e ü","return_url":"https://cms.example.test/settings/"}`))
	f.Add(bearer, []byte(`{"user_id":"42","return_url":"https://cms.example.test.evil.com/settings/"}`))
	f.Add(bearer, []byte(`{"user_id":"..","return_url":"https://cms.example.test/settings/"}`))
	f.Add("bearer "+cmsKeyPrevious, []byte(`{"user_id":"42","return_url":"http://localhost:8000/app?x=1"}`))
	f.Add("Basic "+cmsKey, []byte(`{}`))
	f.Add("", []byte(`{"user_id":"42","return_url":"https://cms.example.test/settings/"}`))
	f.Fuzz(func(t *testing.T, auth string, body []byte) {
		fx := newFixture(t)
		req := httptest.NewRequest(http.MethodPost, "/api/connect-sessions", bytes.NewReader(body))
		req.Header["Authorization"] = []string{auth}
		rec := httptest.NewRecorder()
		fx.handler.ServeHTTP(rec, req)

		if rec.Code >= 500 {
			t.Fatalf("status %d for auth %q body %q: %s\nlogs: %s", rec.Code, auth, body, rec.Body, fx.logs)
		}
		if got := rec.Header().Get("Cache-Control"); got != "no-store" {
			t.Fatalf("Cache-Control = %q", got)
		}
		exact := auth == "Bearer "+cmsKey || auth == "Bearer "+cmsKeyPrevious
		mentions := strings.Contains(auth, cmsKey) || strings.Contains(auth, cmsKeyPrevious)
		switch {
		case rec.Code == http.StatusUnauthorized:
			if exact {
				t.Fatalf("401 for the right key %q", auth)
			}
			wantError(t, rec, http.StatusUnauthorized, "unauthorized")
			if n := pendingCount(t, fx); n != 0 {
				t.Fatalf("unauthorized request stored %d sessions", n)
			}
			return
		case !mentions:
			t.Fatalf("status %d for an Authorization header without the key: %q", rec.Code, auth)
		}

		var in struct {
			UserID    *string `json:"user_id"`
			ReturnURL *string `json:"return_url"`
			LoginHint *string `json:"login_hint"`
		}
		decodeErr := json.Unmarshal(body, &in)
		wellFormed := len(body) <= httpapi.MaxBody && decodeErr == nil && in.UserID != nil && in.ReturnURL != nil &&
			connection.ValidUserID(*in.UserID) == nil
		allowed := wellFormed && fx.srv.Flow.Allowlist.Allowed(*in.ReturnURL)
		hintOK := in.LoginHint == nil || (len(*in.LoginHint) <= 320 && utf8.ValidString(*in.LoginHint) &&
			!strings.ContainsFunc(*in.LoginHint, func(r rune) bool { return r < 0x20 || r == 0x7f }))

		switch {
		case allowed && hintOK:
			if rec.Code != http.StatusCreated {
				t.Fatalf("valid body %q: status %d %s", body, rec.Code, rec.Body)
			}
			checkCreated(t, fx, rec, *in.UserID, *in.ReturnURL)
		case wellFormed && *in.ReturnURL != "" && !allowed:
			wantError(t, rec, http.StatusBadRequest, "return_url_not_allowed")
		default:
			wantError(t, rec, http.StatusBadRequest, "invalid_request")
		}
		if rec.Code != http.StatusCreated {
			if n := pendingCount(t, fx); n != 0 {
				t.Fatalf("refused request %q stored %d sessions", body, n)
			}
		}
	})
}

func checkCreated(t *testing.T, fx *fixture, rec *httptest.ResponseRecorder, userID, returnURL string) {
	t.Helper()
	var out map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || len(out) != 2 {
		t.Fatalf("201 body %s: %v", rec.Body, err)
	}
	tok, ok := strings.CutPrefix(out["connect_url"], publicBase+"/api/connect?session=")
	if !ok || len(tok) != 43 {
		t.Fatalf("connect_url = %q", out["connect_url"])
	}
	if want := fixedNow.Add(connectflow.SessionTTL).Format(time.RFC3339); out["expires_at"] != want {
		t.Fatalf("expires_at = %q, want %q", out["expires_at"], want)
	}
	p, err := fx.store.GetPending(context.Background(), connection.PendingSession, hashOf(tok))
	if err != nil {
		t.Fatalf("session of %q not stored under the token's hash: %v", out["connect_url"], err)
	}
	if p.UserID != userID || p.ReturnURL != returnURL || p.Used {
		t.Fatalf("stored %v for user %q return %q", p, userID, returnURL)
	}
}

// FuzzConnectLink: GET /api/connect with any query never answers 5xx; it
// redirects (and sets the state cookie) only for the one valid session
// token, and everything else gets the 400 page, no cookie, and leaves the
// session unused.
func FuzzConnectLink(f *testing.F) {
	f.Add("session=" + sessionToken)
	f.Add("session=" + sessionToken + "&session=x")
	f.Add("session=" + sessionToken[:42])
	f.Add("session=" + strings.ToUpper(sessionToken))
	f.Add("session=" + url.QueryEscape(sessionToken+"="))
	f.Add("session=%zz;session=" + sessionToken)
	f.Add("")
	f.Fuzz(func(t *testing.T, rawQuery string) {
		fx := newFixture(t)
		fx.plantSession(t, "42")
		req := httptest.NewRequest(http.MethodGet, "/api/connect", nil)
		req.URL.RawQuery = rawQuery
		rec := httptest.NewRecorder()
		fx.handler.ServeHTTP(rec, req)

		browserHeaders(t, rec)
		q, _ := url.ParseQuery(rawQuery)
		if repeated(q, "session") {
			wantPage(t, rec)
			if fx.pendingUsed(t, connection.PendingSession, sessionToken) {
				t.Fatalf("query %q used up the session", rawQuery)
			}
			return
		}
		if q.Get("session") != sessionToken {
			wantPage(t, rec)
			if fx.pendingUsed(t, connection.PendingSession, sessionToken) {
				t.Fatalf("query %q used up the session", rawQuery)
			}
			return
		}
		if rec.Code != http.StatusFound {
			t.Fatalf("valid session: status %d %s", rec.Code, rec.Body)
		}
		loc := rec.Header().Get("Location")
		rest, ok := strings.CutPrefix(loc, authorizeBase+"?")
		if !ok {
			t.Fatalf("redirect to %q, not Microsoft's authorize endpoint", loc)
		}
		aq, _ := url.ParseQuery(rest)
		if aq.Get("code_challenge_method") != "S256" || aq.Get("redirect_uri") != callbackURL || len(aq.Get("state")) != 43 {
			t.Fatalf("authorize query %v", aq)
		}
		c := stateCookie(t, rec)
		if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteLaxMode || c.Path != "/api/callback" || len(c.Value) != 43 || c.MaxAge <= 0 {
			t.Fatalf("state cookie %+v", c)
		}
		st, err := fx.store.GetPending(context.Background(), connection.PendingState, hashOf(aq.Get("state")))
		if err != nil || st.BrowserHash != hashOf(c.Value) || st.UserID != "42" || st.Used {
			t.Fatalf("state %v, %v: not bound to the cookie", st, err)
		}
		if !fx.pendingUsed(t, connection.PendingSession, sessionToken) {
			t.Fatal("the session is still usable after the redirect")
		}
	})
}

// FuzzCallback: GET /api/callback with any query and any Cookie header
// never answers 5xx, and redirects only when the query's state is the
// planted one AND the request carries that state's cookie. Anything else
// gets the 400 page without a redirect, and stores nothing, calls Microsoft
// for nothing and does not burn the state.
func FuzzCallback(f *testing.F) {
	good := "msconnect_state=" + cookieValue
	f.Add("code="+goodCode+"&state="+stateToken, good)
	f.Add("code="+consentCode+"&state="+stateToken, good)
	f.Add("code=other&state="+stateToken, good)
	f.Add("error=access_denied&error_description=AADSTS65004&state="+stateToken, good)
	f.Add("error=interaction_required&state="+stateToken, good)
	f.Add("state="+stateToken, good)
	f.Add("code="+goodCode+"&state="+stateToken, "")
	f.Add("code="+goodCode+"&state="+stateToken, "msconnect_state="+stateToken)
	f.Add("code="+goodCode+"&state="+stateToken, "other=1; msconnect_state="+cookieValue+"; msconnect_state=x")
	f.Add("code="+goodCode+"&state="+stateToken, "msconnect_state=\""+cookieValue+"\"")
	f.Add("code="+goodCode+"&state="+cookieValue, good)
	f.Add("code=%zz&state="+stateToken+";x", good)
	f.Fuzz(func(t *testing.T, rawQuery, cookieHeader string) {
		fx := newFixture(t)
		fx.plantState(t, "42")
		req := httptest.NewRequest(http.MethodGet, "/api/callback", nil)
		req.URL.RawQuery = rawQuery
		if cookieHeader != "" {
			req.Header["Cookie"] = []string{cookieHeader}
		}
		rec := httptest.NewRecorder()
		fx.handler.ServeHTTP(rec, req)

		browserHeaders(t, rec)
		q, _ := url.ParseQuery(rawQuery)
		if repeated(q, "state") || len(q["code"]) > 1 || len(q["error"]) > 1 || len(q["error_description"]) > 1 {
			wantPage(t, rec)
			if fx.pendingUsed(t, connection.PendingState, stateToken) || fx.connections(t) != 0 || fx.idp.exchanges != 0 {
				t.Fatalf("query %q with a repeated parameter burnt the state, stored or exchanged", rawQuery)
			}
			return
		}
		c, err := req.Cookie(httpapi.StateCookie)
		bound := q.Get("state") == stateToken && err == nil && c.Value == cookieValue
		if !bound {
			wantPage(t, rec)
			if fx.pendingUsed(t, connection.PendingState, stateToken) {
				t.Fatalf("query %q cookie %q burnt the state", rawQuery, cookieHeader)
			}
			if n := fx.connections(t); n != 0 || fx.idp.exchanges != 0 {
				t.Fatalf("query %q cookie %q: %d connections stored, %d exchanges", rawQuery, cookieHeader, n, fx.idp.exchanges)
			}
			return
		}

		if rec.Code != http.StatusFound {
			t.Fatalf("bound callback %q: status %d %s\nlogs: %s", rawQuery, rec.Code, rec.Body, fx.logs)
		}
		loc, err := url.Parse(rec.Header().Get("Location"))
		if err != nil || loc.Scheme != "https" || loc.Host != "cms.example.test" || loc.Path != "/settings/" {
			t.Fatalf("redirect to %q (%v): not the session's return URL", rec.Header().Get("Location"), err)
		}
		lq := loc.Query()
		if lq.Get("tab") != "microsoft" {
			t.Fatalf("the CMS's own query was lost: %s", loc)
		}
		want, reason := "error", ""
		switch code := q.Get("code"); {
		case q.Get("error") == "access_denied":
			reason = connectflow.ReasonAccessDenied
		case q.Get("error") == "consent_required" || q.Get("error") == "interaction_required":
			reason = connectflow.ReasonConsentRequired
		case q.Get("error") != "" || code == "":
			reason = connectflow.ReasonServerError
		case code == goodCode:
			want = "signed_in"
		case code == consentCode:
			reason = connectflow.ReasonConsentRequired
		default:
			reason = connectflow.ReasonExchangeFailed
		}
		if lq.Get("microsoft") != want || lq.Get("reason") != reason {
			t.Fatalf("query %q: redirect %s, want microsoft=%s reason=%q", rawQuery, loc, want, reason)
		}
		// v2: the callback never connects; a sign-in becomes a pending
		// connect the CMS completes, found by the hash of connect_code.
		if n := fx.connections(t); n != 0 {
			t.Fatalf("query %q: the callback stored %d connections", rawQuery, n)
		}
		if cc := lq.Get("connect_code"); (cc != "") != (want == "signed_in") {
			t.Fatalf("query %q: redirect %s: connect_code present %t after microsoft=%s", rawQuery, loc, cc != "", want)
		} else if cc != "" {
			if p, err := fx.store.GetPending(context.Background(), connection.PendingConnect, hashOf(cc)); err != nil || p.UserID != "42" {
				t.Fatalf("no pending connect for 42 behind connect_code: %v %v", p, err)
			}
		}
		if c := stateCookie(t, rec); c.MaxAge >= 0 || c.Value != "" {
			t.Fatalf("the used state's cookie is not cleared: %+v", c)
		}
		if !fx.pendingUsed(t, connection.PendingState, stateToken) {
			t.Fatal("the state is still usable after the callback")
		}
	})
}

// FuzzUserIDPath: any user_id, path-escaped as the contract says, reaches
// the same connection through GET and DELETE /api/connections/{user_id},
// and an invalid one is refused with 400; any raw path below
// /api/connections/ never answers 5xx and can only ever read the one stored
// connection, never a token.
func FuzzUserIDPath(f *testing.F) {
	for _, id := range []string{"42", "a/b", "x#y?z", `back\slash`, "%2F", "ü 日本", "...", ".", "..", "", "a\x00b", strings.Repeat("é", 129),
		"a/..", "../x", "./", "a//b", "%2e%2e", "42/token"} {
		f.Add(id, url.PathEscape(id))
	}
	f.Add("a/b", "a/b")
	f.Add("a/b", "a%2fb")
	f.Add("a b", "a+b")
	f.Add("42", "42/token")
	f.Add("42", "%34%32")
	f.Add("42", "42%00")
	f.Add("42", "../connections/42")
	f.Fuzz(func(t *testing.T, id, raw string) {
		fx := newFixture(t)
		valid := connection.ValidUserID(id) == nil
		if valid {
			_, err := fx.store.Create(context.Background(), connection.Connection{
				UserID: id, Status: connection.StatusConnected, AccessToken: "secret-access-token", RefreshToken: "secret-refresh-token",
				AccessTokenExpiresAt: fixedNow.Add(time.Hour), ConnectedAt: fixedNow, LastRefreshedAt: fixedNow,
			})
			if err != nil {
				t.Fatalf("store refused a valid user_id %q: %v", id, err)
			}
		}
		path := "/api/connections/" + url.PathEscape(id)
		rec := cmsRequest(fx, http.MethodGet, path)
		switch {
		case valid:
			if rec.Code != http.StatusOK {
				t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
			}
			var got struct {
				UserID string `json:"user_id"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || got.UserID != id {
				t.Fatalf("GET %s answered user %q (%v), want %q", path, got.UserID, err, id)
			}
			noTokens(t, rec)
			if rec := cmsRequest(fx, http.MethodDelete, path); rec.Code != http.StatusNoContent {
				t.Fatalf("DELETE %s: %d %s", path, rec.Code, rec.Body)
			}
			if fx.connections(t) != 0 {
				t.Fatalf("DELETE %s left the connection", path)
			}
			// Stored again for the raw-path half below.
			_, _ = fx.store.Create(context.Background(), connection.Connection{UserID: id, Status: connection.StatusConnected,
				AccessToken: "secret-access-token", RefreshToken: "secret-refresh-token", AccessTokenExpiresAt: fixedNow.Add(time.Hour)})
		case id == "" || id == "." || id == "..":
			// Not a path segment: the mux never routes it to the handler.
			if rec.Code == http.StatusOK || rec.Code >= 500 {
				t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
			}
		default:
			wantError(t, rec, http.StatusBadRequest, "invalid_request")
		}

		// The raw half: whatever the CMS (or anyone) puts in the path.
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET /api/connections/" + raw + " HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer " + cmsKey + "\r\n\r\n")))
		if err != nil {
			return // net/http's server refuses it before any handler runs
		}
		rec = httptest.NewRecorder()
		fx.handler.ServeHTTP(rec, r)
		if rec.Code >= 500 {
			t.Fatalf("GET /api/connections/%s: %d %s\nlogs: %s", raw, rec.Code, rec.Body, fx.logs)
		}
		if rec.Code == http.StatusOK {
			var got struct {
				UserID string `json:"user_id"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || !valid || got.UserID != id {
				t.Fatalf("GET /api/connections/%s answered user %q (%v); only %q (valid %t) is stored", raw, got.UserID, err, id, valid)
			}
			noTokens(t, rec)
		}
	})
}

func cmsRequest(fx *fixture, method, target string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, nil)
	req.Header.Set("Authorization", "Bearer "+cmsKey)
	rec := httptest.NewRecorder()
	fx.handler.ServeHTTP(rec, req)
	return rec
}

func noTokens(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if b := rec.Body.String(); strings.Contains(b, "secret-access-token") || strings.Contains(b, "secret-refresh-token") {
		t.Fatalf("a status response carries a token: %s", b)
	}
}

// wantError checks the contract's error JSON: exactly error and message.
func wantError(t *testing.T, rec *httptest.ResponseRecorder, status int, code string) {
	t.Helper()
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("status %d body %q is not JSON: %v", rec.Code, rec.Body, err)
	}
	msg, _ := body["message"].(string)
	if rec.Code != status || body["error"] != code || msg == "" || len(body) != 2 {
		t.Fatalf("got %d %s, want %d with error %q and a message", rec.Code, rec.Body, status, code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error Content-Type = %q", ct)
	}
}

// wantPage checks the 400 page of the browser routes: HTML, no redirect, no
// cookie.
func wantPage(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("status %d (Location %q), want the 400 page: %s", rec.Code, rec.Header().Get("Location"), rec.Body)
	}
	if loc := rec.Header().Get("Location"); loc != "" {
		t.Fatalf("400 page with Location %q", loc)
	}
	if sc := rec.Header().Values("Set-Cookie"); len(sc) != 0 {
		t.Fatalf("400 page sets cookies %q", sc)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Fatalf("400 page Content-Type %q", ct)
	}
}

// browserHeaders: every browser-facing response, whatever its status: not
// cached, no Referer to the next site, not framed, not sniffed; pages lock
// down everything else.
func browserHeaders(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code >= 500 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	h := rec.Header()
	if h.Get("Cache-Control") != "no-store" || h.Get("Referrer-Policy") != "no-referrer" ||
		h.Get("X-Frame-Options") != "DENY" || h.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("Cache-Control %q, Referrer-Policy %q, X-Frame-Options %q, X-Content-Type-Options %q",
			h.Get("Cache-Control"), h.Get("Referrer-Policy"), h.Get("X-Frame-Options"), h.Get("X-Content-Type-Options"))
	}
	if rec.Code == http.StatusBadRequest && !strings.HasPrefix(h.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("the 400 page's Content-Security-Policy is %q", h.Get("Content-Security-Policy"))
	}
}

func stateCookie(t *testing.T, rec *httptest.ResponseRecorder) *http.Cookie {
	t.Helper()
	cs := rec.Result().Cookies()
	if len(cs) != 1 || cs[0].Name != httpapi.StateCookie {
		t.Fatalf("cookies %v, want exactly %s", cs, httpapi.StateCookie)
	}
	return cs[0]
}

// pendingCount counts pending entries (sessions and states) by removing
// them all: call it last.
func pendingCount(t *testing.T, fx *fixture) int {
	t.Helper()
	n, err := fx.store.DeleteExpired(context.Background(), fixedNow.Add(365*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// repeated: the query repeats name, or gives it comma-joined as the
// Functions host passes a repeated key (tokens have no comma).
func repeated(q url.Values, name string) bool {
	return len(q[name]) > 1 || len(q[name]) == 1 && strings.Contains(q[name][0], ",")
}
