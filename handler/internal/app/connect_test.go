package app_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/megdocs/msconnector/handler/internal/azurite"
	"github.com/megdocs/msconnector/handler/internal/devidp"
	"github.com/megdocs/msconnector/handler/internal/devstack"
	"github.com/megdocs/msconnector/handler/internal/logtest"
)

func TestReadiness(t *testing.T) {
	s := start(t, nil)
	if r := do(t, noRedirect, http.MethodGet, s.HandlerURL+"/", "", nil); r.status != http.StatusOK {
		t.Errorf("GET / = %d", r.status)
	}
}

func TestCMSKey(t *testing.T) {
	s := start(t, map[string]string{"CMS_API_KEY_PREVIOUS": "the-previous-key"})
	routes := []struct{ method, path string }{
		{http.MethodPost, "/api/connect-sessions"},
		{http.MethodGet, "/api/connections"},
		{http.MethodGet, "/api/connections/42"},
		{http.MethodDelete, "/api/connections/42"},
		{http.MethodPost, "/api/connections/42/token"},
		{http.MethodPost, "/api/connections/42/complete"},
	}
	for _, rt := range routes {
		for _, key := range []string{"", "wrong", s.CMSKey + "x", strings.ToUpper(s.CMSKey)} {
			r := do(t, noRedirect, rt.method, s.HandlerURL+rt.path, key, []byte(`{}`))
			if r.status != http.StatusUnauthorized || r.errorCode(t) != "unauthorized" {
				t.Errorf("%s %s with key %q: %d %s", rt.method, rt.path, key, r.status, r.body)
			}
		}
	}
	// The previous key works while rotating.
	if r := do(t, noRedirect, http.MethodGet, s.HandlerURL+"/api/connections/42", "the-previous-key", nil); r.status != http.StatusNotFound {
		t.Errorf("previous key: %d %s", r.status, r.body)
	}
}

func TestConnectFlow(t *testing.T) {
	s := start(t, nil)
	user := "42"

	r := s.cms(t, http.MethodPost, "/api/connect-sessions", map[string]string{"user_id": user, "return_url": returnURL, "login_hint": "grace@contoso.com"})
	if r.status != http.StatusCreated {
		t.Fatalf("connect-sessions: %d %s", r.status, r.body)
	}
	body := r.json(t)
	connectURL, _ := body["connect_url"].(string)
	if !strings.HasPrefix(connectURL, s.HandlerURL+"/api/connect?session=") {
		t.Errorf("connect_url = %q", connectURL)
	}
	cu, _ := url.Parse(connectURL)
	if tok := cu.Query().Get("session"); len(tok) < 22 { // ≥128 bits in base64url
		t.Errorf("session token %q is too short", tok)
	}
	exp, err := time.Parse(time.RFC3339, body["expires_at"].(string))
	if err != nil || exp.Before(time.Now().Add(9*time.Minute)) || exp.After(time.Now().Add(11*time.Minute)) {
		t.Errorf("expires_at = %v (%v), want about 10 minutes from now", body["expires_at"], err)
	}

	// The browser opens the link: 302 to Microsoft with every parameter.
	b := newBrowser(t)
	resp := do(t, b.Client, http.MethodGet, connectURL, "", nil)
	if resp.status != http.StatusFound {
		t.Fatalf("GET /api/connect: %d %s", resp.status, resp.body)
	}
	auth, _ := url.Parse(resp.header.Get("Location"))
	if got, want := auth.Scheme+"://"+auth.Host+auth.Path, s.IdentityURL+"/common/oauth2/v2.0/authorize"; got != want {
		t.Errorf("authorize endpoint = %s, want %s", got, want)
	}
	q := auth.Query()
	for k, want := range map[string]string{
		"client_id": devstack_ClientID, "response_type": "code", "redirect_uri": s.HandlerURL + "/api/callback",
		"response_mode": "query", "code_challenge_method": "S256", "login_hint": "grace@contoso.com",
	} {
		if q.Get(k) != want {
			t.Errorf("authorize %s = %q, want %q", k, q.Get(k), want)
		}
	}
	scopes := strings.Fields(q.Get("scope"))
	for _, want := range []string{"User.Read", "Files.ReadWrite.All", "offline_access", "openid", "profile"} {
		if !contains(scopes, want) {
			t.Errorf("scope %q lacks %s", q.Get("scope"), want)
		}
	}
	if len(q.Get("state")) < 22 || len(q.Get("code_challenge")) != 43 {
		t.Errorf("state %q / code_challenge %q", q.Get("state"), q.Get("code_challenge"))
	}
	for _, h := range []string{"Cache-Control", "Referrer-Policy"} {
		if resp.header.Get(h) == "" {
			t.Errorf("/api/connect lacks %s", h)
		}
	}
	cookie := resp.header.Get("Set-Cookie")
	for _, attr := range []string{"HttpOnly", "SameSite=Lax", "Path=/api/callback"} {
		if !strings.Contains(cookie, attr) {
			t.Errorf("state cookie %q lacks %s", cookie, attr)
		}
	}
	if strings.Contains(cookie, "Secure") {
		t.Errorf("state cookie %q is Secure on a plain-http loopback callback", cookie)
	}

	// Sign in at the stand-in, come back with code and state.
	cb, err := s.IDP.SignIn(context.Background(), nil, auth.String(), "grace@contoso.com")
	if err != nil {
		t.Fatal(err)
	}
	resp = do(t, b.Client, http.MethodGet, cb.String(), "", nil)
	if resp.status != http.StatusFound {
		t.Fatalf("callback: %d %s", resp.status, resp.body)
	}
	back, err := url.Parse(resp.header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	code := connectCode(t, back)
	if got, want := back.String(), returnURL+"&microsoft=signed_in&connect_code="+code; got != want {
		t.Errorf("callback redirect = %q, want %q", got, want)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(code); err != nil || len(raw) < 16 {
		t.Errorf("connect_code %q: %d bytes of randomness, want at least 128 bits", code, len(raw))
	}
	if resp.header.Get("Cache-Control") != "no-store" || resp.header.Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("callback headers: %v", resp.header)
	}
	if c := resp.header.Get("Set-Cookie"); !strings.Contains(c, "Max-Age=0") {
		t.Errorf("callback did not clear the state cookie: %q", c)
	}

	// Signed in, not connected: the status is unchanged and no event is
	// sent until the CMS completes.
	if r := s.cms(t, http.MethodGet, "/api/connections/"+user, nil); r.status != http.StatusNotFound || r.errorCode(t) != "not_connected" {
		t.Errorf("status before completion: %d %s, want 404 not_connected", r.status, r.body)
	}
	if got := s.logs.Events("connected"); len(got) != 0 {
		t.Errorf("connected before completion: %v", got)
	}
	rt, _ := s.IDP.LatestRefreshToken("8a9b0c1d-2e3f-4a5b-8c7d-9e0f1a2b3c4d")
	// The pending connect holds no connect code, token or verifier in
	// clear text.
	assertNothingInClear(t, s, []string{code, rt, cb.Query().Get("code")})

	r = s.complete(t, user, code)
	if r.status != http.StatusOK {
		t.Fatalf("complete: %d %s", r.status, r.body)
	}
	if got, want := r.json(t)["user_id"], user; got != want || r.json(t)["status"] != "connected" {
		t.Errorf("complete answered %s", r.body)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("complete is cacheable: %v", r.header)
	}
	if r := s.complete(t, user, code); r.status != http.StatusBadRequest || r.errorCode(t) != "invalid_connect_code" {
		t.Errorf("complete with a spent code: %d %s", r.status, r.body)
	}

	// The connection is visible, with the account and no token.
	r = s.cms(t, http.MethodGet, "/api/connections/"+user, nil)
	if r.status != http.StatusOK {
		t.Fatalf("status: %d %s", r.status, r.body)
	}
	st := r.json(t)
	acct, _ := st["account"].(map[string]any)
	if st["user_id"] != user || st["status"] != "connected" || acct["email"] != "grace@contoso.com" ||
		acct["display_name"] != "Grace Hopper" || acct["id"] != "8a9b0c1d-2e3f-4a5b-8c7d-9e0f1a2b3c4d" || acct["tenant_id"] != devidp.ContosoTenantID {
		t.Errorf("status = %s", r.body)
	}
	if st["last_error"] != nil || st["connected_at"] == nil || st["access_token_expires_at"] == nil {
		t.Errorf("status = %s", r.body)
	}
	// Microsoft's granted scopes, as the contract shows them.
	if got, _ := json.Marshal(st["scopes"]); string(got) != `["User.Read","Files.ReadWrite.All","offline_access"]` && string(got) != `["Files.ReadWrite.All","User.Read","offline_access"]` {
		t.Errorf("scopes = %s", got)
	}
	for _, k := range []string{"user_id", "status", "account", "scopes", "access_token_expires_at", "connected_at", "last_refreshed_at", "last_error"} {
		if _, ok := st[k]; !ok {
			t.Errorf("status lacks %q: %s", k, r.body)
		}
	}
	if rt == "" || strings.Contains(string(r.body), rt) || strings.Contains(strings.ToLower(string(r.body)), "token\":") {
		t.Errorf("status leaks a token: %s", r.body)
	}

	// Replays change nothing and redirect nowhere.
	for name, u := range map[string]string{"connect link": connectURL, "callback": cb.String()} {
		resp := do(t, b.Client, http.MethodGet, u, "", nil)
		if resp.status != http.StatusBadRequest || resp.header.Get("Location") != "" || !strings.HasPrefix(resp.header.Get("Content-Type"), "text/html") {
			t.Errorf("%s replay: %d location %q type %q", name, resp.status, resp.header.Get("Location"), resp.header.Get("Content-Type"))
		}
	}
	if n := s.IDP.TokenRequests("authorization_code"); n != 1 {
		t.Errorf("code redemptions = %d, want 1", n)
	}

	// The token API hands out the access token, never the refresh token.
	r = s.cms(t, http.MethodPost, "/api/connections/"+user+"/token", nil)
	tok := r.json(t)
	if r.status != http.StatusOK || tok["token_type"] != "Bearer" || tok["access_token"] == "" || tok["expires_at"] == nil || tok["scope"] == nil {
		t.Errorf("token: %d %s", r.status, r.body)
	}
	if strings.Contains(string(r.body), rt) {
		t.Error("the token API returned the refresh token")
	}
	if sc := strings.Fields(tok["scope"].(string)); len(sc) != 2 || !contains(sc, "User.Read") || !contains(sc, "Files.ReadWrite.All") {
		t.Errorf("token scope = %q, want the access token's scopes User.Read Files.ReadWrite.All", tok["scope"])
	}

	// Raw entities hold no token, code, connect code or verifier in clear
	// text.
	assertNothingInClear(t, s, []string{code, rt, tok["access_token"].(string), cb.Query().Get("code")})

	// Disconnect: 204, then 404, and 204 again.
	for i := 0; i < 2; i++ {
		if r := s.cms(t, http.MethodDelete, "/api/connections/"+user, nil); r.status != http.StatusNoContent {
			t.Errorf("DELETE #%d: %d %s", i+1, r.status, r.body)
		}
	}
	for _, rq := range []struct{ m, p string }{{http.MethodGet, "/api/connections/" + user}, {http.MethodPost, "/api/connections/" + user + "/token"}} {
		if r := s.cms(t, rq.m, rq.p, nil); r.status != http.StatusNotFound || r.errorCode(t) != "not_connected" {
			t.Errorf("%s %s after disconnect: %d %s", rq.m, rq.p, r.status, r.body)
		}
	}
}

const devstack_ClientID = "11111111-2222-4333-8444-555555555555"

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// assertNothingInClear reads every raw entity of both tables and fails if
// any property holds one of the secrets (or any PKCE verifier-like value).
func assertNothingInClear(t *testing.T, s *stack, secrets []string) {
	t.Helper()
	svc, err := aztables.NewServiceClientFromConnectionString(s.Settings["TABLES_CONNECTION_STRING"], nil)
	if err != nil {
		t.Fatal(err)
	}
	rows := 0
	for _, table := range []string{"connections", "connectsessions"} {
		pager := svc.NewClient(table).NewListEntitiesPager(nil)
		for pager.More() {
			page, err := pager.NextPage(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range page.Entities {
				rows++
				for _, sec := range secrets {
					if sec != "" && strings.Contains(string(e), sec) {
						t.Errorf("table %s holds a secret in clear text: %s", table, e)
					}
				}
				if strings.Contains(string(e), `"Verifier"`) {
					t.Errorf("table %s has a plain Verifier column: %s", table, e)
				}
			}
		}
	}
	if rows < 3 {
		t.Errorf("read only %d raw entities: the check proves nothing", rows)
	}
}

func TestConnectSessionValidation(t *testing.T) {
	s := start(t, nil)
	long := strings.Repeat("a", 257)
	for _, tc := range []struct {
		name string
		body string
		code string
	}{
		{"not json", `{"user_id":`, "invalid_request"},
		{"array", `[]`, "invalid_request"},
		{"missing user", `{"return_url":"` + returnURL + `"}`, "invalid_request"},
		{"missing return", `{"user_id":"42"}`, "invalid_request"},
		{"number user", `{"user_id":42,"return_url":"` + returnURL + `"}`, "invalid_request"},
		{"dot", `{"user_id":".","return_url":"` + returnURL + `"}`, "invalid_request"},
		{"dotdot", `{"user_id":"..","return_url":"` + returnURL + `"}`, "invalid_request"},
		{"control", `{"user_id":"a\u0001b","return_url":"` + returnURL + `"}`, "invalid_request"},
		{"too long", `{"user_id":"` + long + `","return_url":"` + returnURL + `"}`, "invalid_request"},
		{"evil host", `{"user_id":"42","return_url":"http://localhost.evil.com/"}`, "return_url_not_allowed"},
		{"userinfo", `{"user_id":"42","return_url":"http://localhost@evil.com/"}`, "return_url_not_allowed"},
		{"scheme-relative", `{"user_id":"42","return_url":"//evil.com/"}`, "return_url_not_allowed"},
		{"javascript", `{"user_id":"42","return_url":"javascript:alert(1)"}`, "return_url_not_allowed"},
		{"too big", `{"user_id":"42","return_url":"` + returnURL + `","login_hint":"` + strings.Repeat("x", 65<<10) + `"}`, "invalid_request"},
	} {
		r := do(t, noRedirect, http.MethodPost, s.HandlerURL+"/api/connect-sessions", s.CMSKey, []byte(tc.body))
		if r.status != http.StatusBadRequest || r.errorCode(t) != tc.code {
			t.Errorf("%s: %d %s, want 400 %s", tc.name, r.status, r.body, tc.code)
		}
	}
}

// TestRejectedUserIDs: one id of each class contract v2 rejects gets 400
// invalid_request on every route that takes a user_id, through the real
// HTTP stack, and nothing is stored: no session, no connection. Before v2
// these were valid users; behind the Functions host, whose decoding turns
// %3F into ?, %23 into # and %5C into \, they reached other users' routes.
func TestRejectedUserIDs(t *testing.T) {
	s := start(t, nil)
	victimCode := connectCode(t, s.signIn(t, "42", "ada@contoso.com")) // a live pending connect a bad id must not touch
	classes := map[string]string{
		"slash": "/", "slash inside": "a/b", "hash": "x#y", "question mark": "x?y", "backslash": `back\slash`,
		"percent": "per%cent", "percent escape": "%2F", "space": "sp ace", "non-ASCII": "ünïcødé", "CJK": "日本",
		"dot": ".", "dot dot": "..", "257 characters": strings.Repeat("a", 257),
	}
	for name, id := range classes {
		t.Run(name, func(t *testing.T) {
			r := s.cms(t, http.MethodPost, "/api/connect-sessions", map[string]string{"user_id": id, "return_url": returnURL})
			if r.status != http.StatusBadRequest || r.errorCode(t) != "invalid_request" {
				t.Errorf("connect-sessions for %q: %d %s", id, r.status, r.body)
			}
			if viaHost != nil {
				// The host decodes these paths before the handler sees
				// them (x%3Fy reaches it as user x): what the handler
				// rejects is proved in the direct run; the rule exists so
				// that a CMS never sends such an id.
				return
			}
			seg := url.PathEscape(id)
			if id == "." || id == ".." {
				seg = strings.Repeat("%2E", len(id)) // a literal dot segment is cleaned away by any client
			}
			for _, rt := range []struct{ method, suffix, body string }{
				{http.MethodGet, "", ""}, {http.MethodDelete, "", ""}, {http.MethodPost, "/token", ""},
				{http.MethodPost, "/complete", `{"connect_code":"` + victimCode + `"}`},
			} {
				var body []byte
				if rt.body != "" {
					body = []byte(rt.body)
				}
				u := s.HandlerURL + "/api/connections/" + seg + rt.suffix
				r := do(t, noRedirect, rt.method, u, s.CMSKey, body)
				if r.status != http.StatusBadRequest || r.errorCode(t) != "invalid_request" {
					t.Errorf("%s %s: %d %s, want 400 invalid_request", rt.method, u, r.status, r.body)
				}
			}
		})
	}
	if r := s.cms(t, http.MethodGet, "/api/connections", nil); r.status != http.StatusOK || len(r.json(t)["connections"].([]any)) != 0 {
		t.Errorf("connections after the rejected ids: %s", r.body)
	}
	// Only the earlier sign-in's session, state and pending connect exist;
	// that pending connect was not spent by any rejected call.
	if n := countEntities(t, s, "connectsessions"); n != 3 {
		t.Errorf("%d entities in connectsessions, want 3 (one session, state and pending connect)", n)
	}
	if r := s.complete(t, "42", victimCode); r.status != http.StatusOK {
		t.Errorf("the pending connect did not survive the rejected calls: %d %s", r.status, r.body)
	}
}

// countEntities counts a table's raw entities.
func countEntities(t *testing.T, s *stack, table string) int {
	t.Helper()
	svc, err := aztables.NewServiceClientFromConnectionString(s.Settings["TABLES_CONNECTION_STRING"], nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	pager := svc.NewClient(table).NewListEntitiesPager(nil)
	for pager.More() {
		page, err := pager.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		n += len(page.Entities)
	}
	return n
}

func TestCallbackRejectsForeignBrowsersWithoutBurningTheState(t *testing.T) {
	s := start(t, nil)
	victim := newBrowser(t)
	auth := victim.begin(t, s.session(t, "7"))
	cb, err := s.IDP.SignIn(context.Background(), nil, auth.String(), "ada@contoso.com")
	if err != nil {
		t.Fatal(err)
	}
	// An attacker's browser (no cookie, or its own) cannot use the state...
	attacker := newBrowser(t)
	attacker.begin(t, s.session(t, "attacker")) // gets a cookie of its own
	for _, c := range []*http.Client{noRedirect, attacker.Client} {
		r := do(t, c, http.MethodGet, cb.String(), "", nil)
		if r.status != http.StatusBadRequest || r.header.Get("Location") != "" {
			t.Errorf("foreign browser: %d location %q", r.status, r.header.Get("Location"))
		}
	}
	if r := s.cms(t, http.MethodGet, "/api/connections/7", nil); r.status != http.StatusNotFound {
		t.Errorf("something was stored: %d", r.status)
	}
	// ...and did not burn it: the victim still signs in.
	r := do(t, victim.Client, http.MethodGet, cb.String(), "", nil)
	if r.status != http.StatusFound || !strings.Contains(r.header.Get("Location"), "microsoft=signed_in") {
		t.Errorf("victim: %d %q", r.status, r.header.Get("Location"))
	}
	// Garbage states are 400 pages too.
	for _, q := range []string{"", "?code=x", "?code=x&state=nope", "?state=" + strings.Repeat("A", 43) + "&code=x"} {
		if r := do(t, victim.Client, http.MethodGet, s.HandlerURL+"/api/callback"+q, "", nil); r.status != http.StatusBadRequest {
			t.Errorf("callback%s: %d", q, r.status)
		}
	}
	if got := len(s.logs.Events("oauth_failed")); got == 0 {
		t.Error("no oauth_failed log line for the rejected callbacks")
	}
}

func TestCallbackErrors(t *testing.T) {
	s := start(t, nil)
	t.Run("user cancels", func(t *testing.T) {
		b := newBrowser(t)
		auth := b.begin(t, s.session(t, "c1"))
		cb, err := s.IDP.SignIn(context.Background(), nil, auth.String(), "") // Cancel
		if err != nil {
			t.Fatal(err)
		}
		r := do(t, b.Client, http.MethodGet, cb.String(), "", nil)
		if got, want := r.header.Get("Location"), returnURL+"&microsoft=error&reason=access_denied"; r.status != http.StatusFound || got != want {
			t.Errorf("%d %q, want %q", r.status, got, want)
		}
	})
	t.Run("exchange fails", func(t *testing.T) {
		b := newBrowser(t)
		auth := b.begin(t, s.session(t, "c2"))
		cb, err := s.IDP.SignIn(context.Background(), nil, auth.String(), "ada@contoso.com")
		if err != nil {
			t.Fatal(err)
		}
		s.IDP.FailNext(1, devidp.OAuthError(http.StatusBadRequest, "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed."))
		r := do(t, b.Client, http.MethodGet, cb.String(), "", nil)
		if got, want := r.header.Get("Location"), returnURL+"&microsoft=error&reason=exchange_failed"; r.status != http.StatusFound || got != want {
			t.Errorf("%d %q, want %q", r.status, got, want)
		}
		if r := s.cms(t, http.MethodGet, "/api/connections/c2", nil); r.status != http.StatusNotFound {
			t.Errorf("a failed exchange stored a connection: %d", r.status)
		}
		evs := s.logs.Events("oauth_failed")
		if len(evs) == 0 || evs[len(evs)-1]["user_id"] != "c2" {
			t.Errorf("oauth_failed lines: %v", evs)
		}
	})
	t.Run("microsoft error parameters", func(t *testing.T) {
		for msErr, reason := range map[string]string{"access_denied": "access_denied", "consent_required": "consent_required", "interaction_required": "consent_required", "server_error": "server_error", "temporarily_unavailable": "server_error", "invalid_scope": "server_error"} {
			b := newBrowser(t)
			auth := b.begin(t, s.session(t, "e-"+msErr))
			u := s.HandlerURL + "/api/callback?" + url.Values{"error": {msErr}, "error_description": {"AADSTS65004: User declined"}, "state": {auth.Query().Get("state")}}.Encode()
			r := do(t, b.Client, http.MethodGet, u, "", nil)
			if got, want := r.header.Get("Location"), returnURL+"&microsoft=error&reason="+reason; r.status != http.StatusFound || got != want {
				t.Errorf("error=%s: %d %q, want %q", msErr, r.status, got, want)
			}
		}
	})
}

func TestConnectLinkIsSingleUseUnderRace(t *testing.T) {
	s := start(t, nil)
	link := s.session(t, "racer")
	var wg sync.WaitGroup
	statuses := make(chan int, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := newBrowser(t)
			req, _ := http.NewRequest(http.MethodGet, link, nil)
			resp, err := b.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(statuses)
	won := 0
	for st := range statuses {
		switch st {
		case http.StatusFound:
			won++
		case http.StatusBadRequest:
		default:
			t.Errorf("status %d", st)
		}
	}
	if won != 1 {
		t.Errorf("%d browsers got through one connect link, want exactly 1", won)
	}
}

func TestNotConfigured(t *testing.T) {
	s := start(t, map[string]string{"ALLOWED_RETURN_URLS": "ftp://nope", "TOKEN_ENCRYPTION_KEY": "not-base64-32-bytes"})
	r := s.cms(t, http.MethodPost, "/api/connect-sessions", map[string]string{"user_id": "1", "return_url": returnURL})
	if r.status != http.StatusServiceUnavailable || r.errorCode(t) != "not_configured" {
		t.Errorf("connect-sessions with a broken allowlist: %d %s", r.status, r.body)
	}
	if strings.Contains(string(r.body), "nope") {
		t.Errorf("response leaks configuration: %s", r.body)
	}
	// A malformed encryption key: the routes that seal answer 503, the log
	// names the secret, the process keeps serving.
	if r := do(t, noRedirect, http.MethodGet, s.HandlerURL+"/", "", nil); r.status != http.StatusOK {
		t.Errorf("GET / = %d", r.status)
	}
	if len(s.logs.Events("configuration_incomplete")) != 1 {
		t.Error("no single configuration_incomplete line")
	}
}

// Status and disconnect need no encryption key: with the key that sealed
// the rows gone, the CMS can still see the connection and delete it; only
// the token API, which must open the tokens, answers 503 not_configured.
func TestStatusAndDeleteWorkWithoutTheSealingKey(t *testing.T) {
	tables := azurite.ForTest(t)
	keyA := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	keyB := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 32))
	first := startOn(t, tables, map[string]string{"TOKEN_ENCRYPTION_KEY": keyA})
	first.connect(t, "k", "ada@contoso.com")
	first.Stop()

	s := startOn(t, tables, map[string]string{"TOKEN_ENCRYPTION_KEY": keyB})
	if r := s.cms(t, http.MethodGet, "/api/connections/k", nil); r.status != http.StatusOK || r.json(t)["status"] != "connected" {
		t.Errorf("status without the sealing key: %d %s", r.status, r.body)
	}
	if r := s.cms(t, http.MethodPost, "/api/connections/k/token", nil); r.status != http.StatusServiceUnavailable || r.errorCode(t) != "not_configured" {
		t.Errorf("token without the sealing key: %d %s", r.status, r.body)
	}
	if r := s.cms(t, http.MethodDelete, "/api/connections/k", nil); r.status != http.StatusNoContent {
		t.Errorf("delete without the sealing key: %d %s", r.status, r.body)
	}
	if r := s.cms(t, http.MethodGet, "/api/connections/k", nil); r.status != http.StatusNotFound {
		t.Errorf("after delete: %d", r.status)
	}
}

// startOn runs a stack on an existing Table service.
func startOn(t *testing.T, tables string, settings map[string]string) *stack {
	t.Helper()
	logs := &logtest.Buffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := devstack.Start(ctx, devstack.Options{TablesConnectionString: tables, Settings: settings, Logs: logs, WithoutCMS: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return &stack{Stack: s, logs: logs}
}
