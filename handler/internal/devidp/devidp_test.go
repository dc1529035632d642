package devidp_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/clocktest"
	"github.com/megdocs/msconnector/handler/internal/devidp"
)

const (
	clientID = "11111111-2222-3333-4444-555555555555"
	redirect = "http://localhost:8080/api/callback"
	secret   = "dev-secret"
	scopes   = "User.Read Files.ReadWrite.All offline_access openid profile"
	verifier = "dBjftJeZ4CK-mB2aDkkT7Vh5p2mWWsM0HtCZYo8yXUw"
)

var (
	ada   = devidp.DefaultAccounts()[0]
	grace = devidp.DefaultAccounts()[1]
	alan  = devidp.DefaultAccounts()[2]
)

// idp is a stand-in served on loopback with a settable clock.
type idp struct {
	*devidp.Server
	URL   string
	clock *clocktest.Clock
	hc    *http.Client
}

func newIDP(t *testing.T, change ...func(*devidp.Config)) *idp {
	t.Helper()
	clk := clocktest.New(time.Date(2026, 11, 25, 23, 30, 0, 0, time.UTC))
	cfg := devidp.Config{ClientID: clientID, ClientSecret: secret, RedirectURL: redirect, IdentityHeader: "id-header", Now: clk.Now}
	for _, c := range change {
		c(&cfg)
	}
	s, err := devidp.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	return &idp{Server: s, URL: hs.URL, clock: clk, hc: &http.Client{
		Timeout:       5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func challengeOf(v string) string {
	sum := sha256.Sum256([]byte(v))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// authURL builds an authorize URL with good parameters, changed by set
// (an empty value deletes the parameter).
func (p *idp) authURL(tenant string, set map[string]string) string {
	q := url.Values{
		"client_id": {clientID}, "response_type": {"code"}, "redirect_uri": {redirect}, "response_mode": {"query"},
		"scope": {scopes}, "state": {"st-1"}, "code_challenge": {challengeOf(verifier)}, "code_challenge_method": {"S256"},
	}
	for k, v := range set {
		if v == "" {
			q.Del(k)
		} else {
			q.Set(k, v)
		}
	}
	return p.URL + "/" + tenant + "/oauth2/v2.0/authorize?" + q.Encode()
}

// code signs account in and returns the authorization code.
func (p *idp) code(t *testing.T, account string, set map[string]string) string {
	t.Helper()
	loc, err := p.SignIn(context.Background(), p.hc, p.authURL("common", set), account)
	if err != nil {
		t.Fatalf("SignIn: %v", err)
	}
	q := loc.Query()
	if q.Get("code") == "" || q.Get("state") != "st-1" || !strings.HasPrefix(loc.String(), redirect+"?") {
		t.Fatalf("redirect = %s, want %s with code and state", loc, redirect)
	}
	return q.Get("code")
}

// token posts form to the token endpoint.
func (p *idp) token(t *testing.T, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := p.hc.PostForm(p.URL+"/common/oauth2/v2.0/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("token response is not JSON: %v", err)
	}
	return resp.StatusCode, body
}

func codeForm(code string) url.Values {
	return url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect},
		"code_verifier": {verifier}, "client_id": {clientID}, "client_secret": {secret}}
}

func refreshForm(rt string) url.Values {
	return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {clientID},
		"scope": {"User.Read Files.ReadWrite.All offline_access"}, "client_secret": {secret}}
}

// wantOAuthError checks Microsoft's error JSON: status, error, the AADSTS
// number, and every field Microsoft sends.
func wantOAuthError(t *testing.T, status int, body map[string]any, wantStatus int, wantError string, wantCode int) {
	t.Helper()
	if status != wantStatus || body["error"] != wantError {
		t.Fatalf("answer = %d %v, want %d %s", status, body, wantStatus, wantError)
	}
	codes, _ := body["error_codes"].([]any)
	if len(codes) != 1 || codes[0] != float64(wantCode) {
		t.Fatalf("error_codes = %v, want [%d]", body["error_codes"], wantCode)
	}
	desc, _ := body["error_description"].(string)
	re := regexp.MustCompile(`^AADSTS` + itoa(wantCode) + `: [^\r\n]+\r\nTrace ID: ([0-9a-f-]{36})\r\nCorrelation ID: ([0-9a-f-]{36})\r\nTimestamp: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ)$`)
	m := re.FindStringSubmatch(desc)
	if m == nil {
		t.Fatalf("error_description = %q, not Microsoft's shape", desc)
	}
	if body["trace_id"] != m[1] || body["correlation_id"] != m[2] || body["timestamp"] != m[3] {
		t.Errorf("trace_id, correlation_id, timestamp = %v, %v, %v; want those of the description", body["trace_id"], body["correlation_id"], body["timestamp"])
	}
	if uri, _ := body["error_uri"].(string); !strings.HasSuffix(uri, "/error?code="+itoa(wantCode)) {
		t.Errorf("error_uri = %q", uri)
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func claimsOf(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("id_token has %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func get(t *testing.T, hc *http.Client, u string, header map[string]string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestAuthorizeValidation(t *testing.T) {
	p := newIDP(t)
	tests := []struct {
		name      string
		set       map[string]string
		wantPage  string // AADSTS on an error page (no redirect)
		wantError string // error on the redirect back
	}{
		{name: "unknown client", set: map[string]string{"client_id": "99999999-0000-0000-0000-000000000000"}, wantPage: "AADSTS700016"},
		{name: "redirect uri differs", set: map[string]string{"redirect_uri": redirect + "/"}, wantPage: "AADSTS50011"},
		{name: "redirect uri missing", set: map[string]string{"redirect_uri": ""}, wantPage: "AADSTS50011"},
		{name: "implicit flow", set: map[string]string{"response_type": "token"}, wantError: "unsupported_response_type"},
		{name: "no code challenge", set: map[string]string{"code_challenge": ""}, wantError: "invalid_request"},
		{name: "plain challenge", set: map[string]string{"code_challenge_method": "plain"}, wantError: "invalid_request"},
		{name: "form_post", set: map[string]string{"response_mode": "form_post"}, wantError: "invalid_request"},
		{name: "no scope", set: map[string]string{"scope": ""}, wantError: "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, h, body := get(t, p.hc, p.authURL("common", tt.set), nil)
			if tt.wantPage != "" {
				if status != http.StatusBadRequest || h.Get("Location") != "" || !strings.Contains(body, tt.wantPage) {
					t.Fatalf("answer = %d (Location %q), want 400 page with %s: %s", status, h.Get("Location"), tt.wantPage, body)
				}
				return
			}
			loc, err := url.Parse(h.Get("Location"))
			if status != http.StatusFound || err != nil || !strings.HasPrefix(loc.String(), redirect+"?") {
				t.Fatalf("answer = %d to %q, want a redirect to the client", status, h.Get("Location"))
			}
			if q := loc.Query(); q.Get("error") != tt.wantError || q.Get("state") != "st-1" || !strings.HasPrefix(q.Get("error_description"), "AADSTS") || q.Get("code") != "" {
				t.Errorf("redirect query = %v, want error=%s with state", q, tt.wantError)
			}
		})
	}
}

func TestSignInPage(t *testing.T) {
	p := newIDP(t)
	order := func(page string, accts ...devidp.Account) []int {
		var idx []int
		for _, a := range accts {
			idx = append(idx, strings.Index(page, a.UserPrincipalName))
		}
		return idx
	}
	t.Run("common lists every account; login_hint goes first, highlighted", func(t *testing.T) {
		status, h, page := get(t, p.hc, p.authURL("common", map[string]string{"login_hint": "Grace@Contoso.com"}), nil)
		if status != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
			t.Fatalf("status %d, content type %q", status, h.Get("Content-Type"))
		}
		idx := order(page, grace, ada, alan)
		if idx[0] < 0 || idx[1] < idx[0] || idx[2] < idx[1] {
			t.Errorf("account positions grace, ada, alan = %v: want all listed, grace first", idx)
		}
		if !regexp.MustCompile(`class="acct hinted"[^>]*data-upn="grace@contoso.com"`).MatchString(page) {
			t.Error("grace's button is not highlighted")
		}
		if strings.Count(page, `class="acct hinted"`) != 1 {
			t.Errorf("%d highlighted buttons, want 1", strings.Count(page, `class="acct hinted"`))
		}
		if !strings.Contains(page, `name="cancel"`) {
			t.Error("no Cancel button")
		}
	})
	for _, tc := range []struct {
		tenant string
		want   []devidp.Account
		not    []devidp.Account
	}{
		{"consumers", []devidp.Account{alan}, []devidp.Account{ada, grace}},
		{"organizations", []devidp.Account{ada, grace}, []devidp.Account{alan}},
		{devidp.ContosoTenantID, []devidp.Account{ada, grace}, []devidp.Account{alan}},
	} {
		t.Run("tenant "+tc.tenant, func(t *testing.T) {
			_, _, page := get(t, p.hc, p.authURL(tc.tenant, nil), nil)
			for _, a := range tc.want {
				if !strings.Contains(page, a.UserPrincipalName) {
					t.Errorf("%s not offered", a.UserPrincipalName)
				}
			}
			for _, a := range tc.not {
				if strings.Contains(page, a.UserPrincipalName) {
					t.Errorf("%s offered", a.UserPrincipalName)
				}
			}
		})
	}
	t.Run("cancel", func(t *testing.T) {
		loc, err := p.SignIn(context.Background(), p.hc, p.authURL("common", nil), "")
		if err != nil {
			t.Fatal(err)
		}
		if q := loc.Query(); q.Get("error") != "access_denied" || q.Get("state") != "st-1" || q.Get("code") != "" {
			t.Errorf("cancel redirect = %s, want error=access_denied with state", loc)
		}
	})
	t.Run("picking an account the tenant does not allow", func(t *testing.T) {
		_, err := p.SignIn(context.Background(), p.hc, p.authURL("consumers", nil), ada.UserPrincipalName)
		if err == nil || !strings.Contains(err.Error(), "400") {
			t.Errorf("SignIn = %v, want the 400 page", err)
		}
	})
}

func TestCodeRedemption(t *testing.T) {
	t.Run("tokens and id_token", func(t *testing.T) {
		p := newIDP(t)
		status, body := p.token(t, codeForm(p.code(t, ada.UserPrincipalName, map[string]string{"nonce": "n-1"})))
		if status != 200 {
			t.Fatalf("status %d: %v", status, body)
		}
		if body["token_type"] != "Bearer" || body["expires_in"] != float64(3600) || body["scope"] != "User.Read Files.ReadWrite.All openid profile email" {
			t.Errorf("token response = %v", body)
		}
		for _, k := range []string{"access_token", "refresh_token", "id_token"} {
			if s, _ := body[k].(string); len(s) < 20 {
				t.Errorf("%s = %q", k, s)
			}
		}
		c := claimsOf(t, body["id_token"].(string))
		want := map[string]any{"aud": clientID, "iss": p.URL + "/" + ada.TenantID + "/v2.0", "oid": ada.OID, "tid": ada.TenantID,
			"name": "Ada Lovelace", "preferred_username": "ada@contoso.com", "ver": "2.0", "nonce": "n-1"}
		for k, v := range want {
			if c[k] != v {
				t.Errorf("id_token %s = %v, want %v", k, c[k], v)
			}
		}
		if p.TokenRequests("authorization_code") != 1 {
			t.Errorf("authorization_code requests = %d", p.TokenRequests("authorization_code"))
		}
	})
	t.Run("no offline_access: no refresh token; no openid: no id_token", func(t *testing.T) {
		p := newIDP(t)
		_, body := p.token(t, codeForm(p.code(t, ada.UserPrincipalName, map[string]string{"scope": "User.Read"})))
		if _, ok := body["refresh_token"]; ok {
			t.Error("refresh_token without offline_access")
		}
		if _, ok := body["id_token"]; ok {
			t.Error("id_token without openid")
		}
		if body["scope"] != "User.Read" {
			t.Errorf("scope = %v", body["scope"])
		}
	})
	t.Run("failures", func(t *testing.T) {
		p := newIDP(t)
		tests := []struct {
			name       string
			form       func(code string) url.Values
			before     func()
			wantStatus int
			wantError  string
			wantCode   int
		}{
			{name: "wrong PKCE verifier", form: func(c string) url.Values {
				f := codeForm(c)
				f.Set("code_verifier", "another-verifier-another-verifier-another-ver")
				return f
			}, wantStatus: 400, wantError: "invalid_grant", wantCode: 501481},
			{name: "no PKCE verifier", form: func(c string) url.Values {
				f := codeForm(c)
				f.Del("code_verifier")
				return f
			}, wantStatus: 400, wantError: "invalid_grant", wantCode: 501481},
			{name: "redirect uri differs", form: func(c string) url.Values {
				f := codeForm(c)
				f.Set("redirect_uri", "http://localhost:8080/other")
				return f
			}, wantStatus: 400, wantError: "invalid_request", wantCode: 500112},
			{name: "wrong secret", form: func(c string) url.Values {
				f := codeForm(c)
				f.Set("client_secret", "nope")
				return f
			}, wantStatus: 401, wantError: "invalid_client", wantCode: 7000215},
			{name: "no credential", form: func(c string) url.Values {
				f := codeForm(c)
				f.Del("client_secret")
				return f
			}, wantStatus: 401, wantError: "invalid_client", wantCode: 7000218},
			{name: "unknown client", form: func(c string) url.Values {
				f := codeForm(c)
				f.Set("client_id", "99999999-0000-0000-0000-000000000000")
				return f
			}, wantStatus: 400, wantError: "unauthorized_client", wantCode: 700016},
			{name: "unknown code", form: func(string) url.Values { return codeForm("made-up") },
				wantStatus: 400, wantError: "invalid_grant", wantCode: 9002313},
			{name: "expired code", before: func() { p.clock.Advance(10 * time.Minute) }, form: codeForm,
				wantStatus: 400, wantError: "invalid_grant", wantCode: 70008},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				code := p.code(t, ada.UserPrincipalName, nil)
				if tt.before != nil {
					tt.before()
				}
				status, body := p.token(t, tt.form(code))
				wantOAuthError(t, status, body, tt.wantStatus, tt.wantError, tt.wantCode)
			})
		}
	})
	t.Run("a code works once (AADSTS54005), also under concurrency", func(t *testing.T) {
		p := newIDP(t)
		code := p.code(t, grace.UserPrincipalName, nil)
		const n = 12
		var wg sync.WaitGroup
		statuses := make(chan int, n)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				status, body := p.token(t, codeForm(code))
				if status != 200 {
					wantOAuthError(t, status, body, 400, "invalid_grant", 54005)
				}
				statuses <- status
			}()
		}
		wg.Wait()
		close(statuses)
		ok := 0
		for s := range statuses {
			if s == 200 {
				ok++
			}
		}
		if ok != 1 {
			t.Errorf("%d redemptions succeeded, want exactly 1", ok)
		}
	})
}

func TestRefreshRotationAndRevocation(t *testing.T) {
	p := newIDP(t)
	_, first := p.token(t, codeForm(p.code(t, ada.UserPrincipalName, nil)))
	rt1 := first["refresh_token"].(string)

	status, body := p.token(t, refreshForm(rt1))
	if status != 200 {
		t.Fatalf("refresh = %d %v", status, body)
	}
	rt2 := body["refresh_token"].(string)
	if rt2 == rt1 || body["scope"] != "User.Read Files.ReadWrite.All openid profile email" || body["access_token"] == first["access_token"] {
		t.Fatalf("refresh answer = %v: want a new refresh and access token and the granted scopes", body)
	}
	if _, ok := body["id_token"]; ok {
		t.Error("id_token on a refresh that did not ask for openid")
	}
	if latest, _ := p.LatestRefreshToken(ada.OID); latest != rt2 || !p.IsLatestRefreshToken(rt2) || p.IsLatestRefreshToken(rt1) {
		t.Errorf("latest = %v; IsLatest(rt2) %v, IsLatest(rt1) %v", latest == rt2, p.IsLatestRefreshToken(rt2), p.IsLatestRefreshToken(rt1))
	}
	// Microsoft does not revoke a used refresh token: a lost write is
	// recoverable with the old one.
	if !p.IsRefreshTokenAccepted(rt1) {
		t.Error("rt1 no longer accepted after rotation")
	}
	status, body = p.token(t, refreshForm(rt1))
	if status != 200 {
		t.Fatalf("refresh with the older token = %d %v", status, body)
	}
	rt3 := body["refresh_token"].(string)
	if latest, _ := p.LatestRefreshToken(ada.OID); latest != rt3 {
		t.Error("latest is not the newest issued")
	}
	if got := p.TokenRequests("refresh_token"); got != 2 {
		t.Errorf("refresh requests = %d, want 2", got)
	}
	if _, ok := p.LatestRefreshToken(grace.OID); ok {
		t.Error("grace has a refresh token without signing in")
	}

	if err := p.RevokeAccount(ada.OID); err != nil {
		t.Fatal(err)
	}
	for _, rt := range []string{rt1, rt2, rt3} {
		if p.IsRefreshTokenAccepted(rt) {
			t.Error("a refresh token is accepted after revocation")
		}
		status, body := p.token(t, refreshForm(rt))
		wantOAuthError(t, status, body, 400, "invalid_grant", 70008)
	}
	// Access tokens stay valid until they expire, as Microsoft's do.
	if status, _, _ := get(t, p.hc, p.URL+"/v1.0/me", map[string]string{"Authorization": "Bearer " + first["access_token"].(string)}); status != 200 {
		t.Errorf("/me after revocation = %d, want 200", status)
	}
	// The user can connect again.
	_, again := p.token(t, codeForm(p.code(t, ada.UserPrincipalName, nil)))
	rt4, _ := again["refresh_token"].(string)
	if !p.IsRefreshTokenAccepted(rt4) {
		t.Fatal("a new sign-in's refresh token is refused after revocation")
	}
	if status, body := p.token(t, refreshForm(rt4)); status != 200 {
		t.Errorf("refresh after signing in again = %d %v", status, body)
	}
	if err := p.RevokeAccount("no-such-oid"); err == nil {
		t.Error("RevokeAccount of an unknown account succeeded")
	}
}

func TestRefreshFailures(t *testing.T) {
	p := newIDP(t)
	_, first := p.token(t, codeForm(p.code(t, alan.UserPrincipalName, nil)))
	rt := first["refresh_token"].(string)
	tests := []struct {
		name       string
		form       url.Values
		before     func()
		wantStatus int
		wantError  string
		wantCode   int
		wantSub    string
	}{
		{name: "no scope (AADSTS90009)", form: func() url.Values { f := refreshForm(rt); f.Del("scope"); return f }(),
			wantStatus: 400, wantError: "invalid_request", wantCode: 90009},
		{name: "scope never consented", form: func() url.Values { f := refreshForm(rt); f.Set("scope", "Mail.Read offline_access"); return f }(),
			wantStatus: 400, wantError: "invalid_grant", wantCode: 65001, wantSub: "consent_required"},
		{name: "unknown refresh token", form: refreshForm("made-up"), wantStatus: 400, wantError: "invalid_grant", wantCode: 9002313},
		{name: "unknown client", form: func() url.Values { f := refreshForm(rt); f.Set("client_id", "x"); return f }(),
			wantStatus: 400, wantError: "unauthorized_client", wantCode: 700016},
		{name: "90 days unused", before: func() { p.clock.Advance(90 * 24 * time.Hour) }, form: refreshForm(rt),
			wantStatus: 400, wantError: "invalid_grant", wantCode: 700082, wantSub: "bad_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.before != nil {
				tt.before()
			}
			status, body := p.token(t, tt.form)
			wantOAuthError(t, status, body, tt.wantStatus, tt.wantError, tt.wantCode)
			if got, _ := body["suberror"].(string); got != tt.wantSub {
				t.Errorf("suberror = %q, want %q", got, tt.wantSub)
			}
		})
	}
}

// miToken asks the managed identity endpoint for resource.
func (p *idp) miToken(t *testing.T, resource, header string) (int, map[string]any) {
	t.Helper()
	q := url.Values{"api-version": {"2019-08-01"}, "resource": {resource}}
	status, _, body := get(t, p.hc, p.URL+devidp.ManagedIdentityPath+"?"+q.Encode(), map[string]string{"X-IDENTITY-HEADER": header})
	var m map[string]any
	_ = json.Unmarshal([]byte(body), &m)
	return status, m
}

func assertionForm(code, assertion string) url.Values {
	f := codeForm(code)
	f.Del("client_secret")
	f.Set("client_assertion_type", devidp.AssertionType)
	f.Set("client_assertion", assertion)
	return f
}

func TestClientAssertion(t *testing.T) {
	p := newIDP(t, func(c *devidp.Config) { c.ClientSecret = "" })
	if status, _ := p.miToken(t, devidp.AssertionAudience, "wrong"); status != http.StatusUnauthorized {
		t.Fatalf("identity endpoint with the wrong header = %d, want 401", status)
	}
	status, mi := p.miToken(t, devidp.AssertionAudience+"/.default", "id-header")
	if status != 200 || mi["resource"] != devidp.AssertionAudience || mi["token_type"] != "Bearer" {
		t.Fatalf("identity endpoint = %d %v", status, mi)
	}
	if exp, _ := mi["expires_on"].(string); exp != itoa(int(p.clock.Now().Add(time.Hour).Unix())) {
		t.Errorf("expires_on = %v, want Unix seconds as a string", mi["expires_on"])
	}
	good := mi["access_token"].(string)
	_, vault := p.miToken(t, "https://vault.azure.net", "id-header")
	if p.ManagedIdentityRequests() != 2 {
		t.Errorf("identity requests = %d, want 2", p.ManagedIdentityRequests())
	}

	status, body := p.token(t, assertionForm(p.code(t, ada.UserPrincipalName, nil), good))
	if status != 200 {
		t.Fatalf("exchange with the identity's assertion = %d %v", status, body)
	}
	rt := body["refresh_token"].(string)
	rf := refreshForm(rt)
	rf.Del("client_secret")
	rf.Set("client_assertion_type", devidp.AssertionType)
	rf.Set("client_assertion", good)
	if status, body := p.token(t, rf); status != 200 {
		t.Fatalf("refresh with the identity's assertion = %d %v", status, body)
	}

	tests := []struct {
		name      string
		form      url.Values
		before    func()
		wantCode  int
		wantError string
	}{
		{name: "token for another audience", form: assertionForm(p.code(t, ada.UserPrincipalName, nil), vault["access_token"].(string)), wantCode: 700213, wantError: "invalid_client"},
		{name: "a string the identity never issued", form: assertionForm(p.code(t, ada.UserPrincipalName, nil), "eyJ.forged.x"), wantCode: 700213, wantError: "invalid_client"},
		{name: "secret while none is configured", form: codeForm(p.code(t, ada.UserPrincipalName, nil)), wantCode: 7000215, wantError: "invalid_client"},
		{name: "wrong assertion type", form: func() url.Values {
			f := assertionForm(p.code(t, ada.UserPrincipalName, nil), good)
			f.Set("client_assertion_type", "urn:x")
			return f
		}(), wantCode: 700023, wantError: "invalid_request"},
		{name: "invalidated (stale) assertion", before: p.InvalidateAssertions, form: assertionForm(p.code(t, ada.UserPrincipalName, nil), good), wantCode: 700024, wantError: "invalid_client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.before != nil {
				tt.before()
			}
			status, body := p.token(t, tt.form)
			wantStatus := 401
			if tt.wantError == "invalid_request" {
				wantStatus = 400
			}
			wantOAuthError(t, status, body, wantStatus, tt.wantError, tt.wantCode)
		})
	}
	t.Run("a fresh assertion works after invalidation; it expires with the clock", func(t *testing.T) {
		_, mi := p.miToken(t, devidp.AssertionAudience, "id-header")
		fresh := mi["access_token"].(string)
		if status, body := p.token(t, assertionForm(p.code(t, grace.UserPrincipalName, nil), fresh)); status != 200 {
			t.Fatalf("fresh assertion = %d %v", status, body)
		}
		p.clock.Advance(time.Hour)
		status, body := p.token(t, assertionForm(p.code(t, grace.UserPrincipalName, nil), fresh))
		wantOAuthError(t, status, body, 401, "invalid_client", 700024)
	})
	t.Run("custom validator", func(t *testing.T) {
		var seen []string
		q := newIDP(t, func(c *devidp.Config) {
			c.ClientSecret = ""
			c.AcceptAssertion = func(a string) error {
				seen = append(seen, a)
				if a == "expected" {
					return nil
				}
				return devidp.ErrAssertionExpired
			}
		})
		if status, _ := q.token(t, assertionForm(q.code(t, ada.UserPrincipalName, nil), "expected")); status != 200 {
			t.Errorf("expected assertion refused: %d", status)
		}
		status, body := q.token(t, assertionForm(q.code(t, ada.UserPrincipalName, nil), "other"))
		wantOAuthError(t, status, body, 401, "invalid_client", 700024)
		if !reflect.DeepEqual(seen, []string{"expected", "other"}) {
			t.Errorf("validator saw %v", seen)
		}
	})
}

func TestGraphMe(t *testing.T) {
	p := newIDP(t)
	at := func(acct devidp.Account) string {
		_, body := p.token(t, codeForm(p.code(t, acct.UserPrincipalName, nil)))
		return body["access_token"].(string)
	}
	adaAT, alanAT := at(ada), at(alan)
	tests := []struct {
		name       string
		auth       string
		advance    time.Duration
		wantStatus int
		want       map[string]any
		wantMsg    string
	}{
		{name: "work account", auth: "Bearer " + adaAT, wantStatus: 200,
			want: map[string]any{"id": ada.OID, "displayName": "Ada Lovelace", "mail": "ada@contoso.com", "userPrincipalName": "ada@contoso.com"}},
		{name: "personal account: CID and null mail", auth: "bearer " + alanAT, wantStatus: 200,
			want: map[string]any{"id": "6b1e4f0a9c2d7e35", "displayName": "Alan Turing", "mail": nil, "userPrincipalName": "alan.turing@outlook.com"}},
		{name: "no token", auth: "", wantStatus: 401, wantMsg: "Access token is empty."},
		{name: "unknown token", auth: "Bearer forged", wantStatus: 401, wantMsg: "IDX14100"},
		{name: "expired token", auth: "Bearer " + adaAT, advance: time.Hour, wantStatus: 401, wantMsg: "Lifetime validation failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p.clock.Advance(tt.advance)
			status, h, raw := get(t, p.hc, p.URL+"/v1.0/me", map[string]string{"Authorization": tt.auth})
			var body map[string]any
			if err := json.Unmarshal([]byte(raw), &body); err != nil {
				t.Fatalf("not JSON: %s", raw)
			}
			if status != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", status, tt.wantStatus, raw)
			}
			for k, v := range tt.want {
				if got, ok := body[k]; !ok || got != v {
					t.Errorf("%s = %v, want %v", k, got, v)
				}
			}
			if tt.wantMsg != "" {
				e, _ := body["error"].(map[string]any)
				inner, _ := e["innerError"].(map[string]any)
				if e["code"] != "InvalidAuthenticationToken" || !strings.Contains(e["message"].(string), tt.wantMsg) || inner["request-id"] == nil || h.Get("request-id") != inner["request-id"] {
					t.Errorf("Graph error = %s", raw)
				}
				if !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer ") {
					t.Errorf("WWW-Authenticate = %q", h.Get("WWW-Authenticate"))
				}
			}
		})
	}
}

func TestControls(t *testing.T) {
	t.Run("FailNext injects exactly n answers, counted", func(t *testing.T) {
		p := newIDP(t)
		_, first := p.token(t, codeForm(p.code(t, ada.UserPrincipalName, nil)))
		rt := first["refresh_token"].(string)
		p.FailNext(2, devidp.OAuthError(400, "invalid_grant", 50196, "The server terminated an operation because it encountered a client request loop."))
		for range 2 {
			status, body := p.token(t, refreshForm(rt))
			wantOAuthError(t, status, body, 400, "invalid_grant", 50196)
		}
		if status, _ := p.token(t, refreshForm(rt)); status != 200 {
			t.Errorf("third refresh = %d, want 200", status)
		}
		if got := p.TokenRequests("refresh_token"); got != 3 {
			t.Errorf("refresh requests = %d, want 3", got)
		}
		p.FailNext(1, devidp.Throttled(30*time.Second))
		resp, err := p.hc.PostForm(p.URL+"/common/oauth2/v2.0/token", refreshForm(rt))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "30" {
			t.Errorf("throttled answer = %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		p.FailNext(1, devidp.Response{Status: 200, Body: []byte(`{"access_token":`)})
		resp, err = p.hc.PostForm(p.URL+"/common/oauth2/v2.0/token", refreshForm(rt))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != `{"access_token":` {
			t.Errorf("raw answer = %d %q", resp.StatusCode, b)
		}
	})
	t.Run("SetLatency delays token requests", func(t *testing.T) {
		p := newIDP(t)
		p.SetLatency(time.Second)
		hc := &http.Client{Timeout: 100 * time.Millisecond}
		if _, err := hc.PostForm(p.URL+"/common/oauth2/v2.0/token", refreshForm("x")); err == nil {
			t.Error("a token request beat the latency")
		}
		p.SetLatency(0)
		if _, err := hc.PostForm(p.URL+"/common/oauth2/v2.0/token", refreshForm("x")); err != nil {
			t.Errorf("without latency: %v", err)
		}
	})
	t.Run("SetExpiresIn", func(t *testing.T) {
		p := newIDP(t)
		p.SetExpiresIn(90 * time.Second)
		_, body := p.token(t, codeForm(p.code(t, ada.UserPrincipalName, nil)))
		if body["expires_in"] != float64(90) {
			t.Errorf("expires_in = %v, want 90", body["expires_in"])
		}
	})
}

func TestAdminPage(t *testing.T) {
	p := newIDP(t)
	_, first := p.token(t, codeForm(p.code(t, grace.UserPrincipalName, nil)))
	rt := first["refresh_token"].(string)

	status, _, page := get(t, p.hc, p.URL+"/devidp/", nil)
	if status != 200 || strings.Count(page, `action="/devidp/revoke"`) != 3 || !strings.Contains(page, "Grace Hopper") {
		t.Fatalf("admin page = %d: %s", status, page)
	}

	post := func(oid string, header map[string]string) int {
		req, _ := http.NewRequest(http.MethodPost, p.URL+"/devidp/revoke", strings.NewReader(url.Values{"oid": {oid}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := p.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := post(grace.OID, map[string]string{"Sec-Fetch-Site": "cross-site"}); got != http.StatusForbidden {
		t.Errorf("cross-site revoke = %d, want 403", got)
	}
	if !p.IsRefreshTokenAccepted(rt) {
		t.Fatal("a refused cross-site revoke revoked")
	}
	if got := post("nobody", nil); got != http.StatusNotFound {
		t.Errorf("revoke unknown = %d, want 404", got)
	}
	if got := post(grace.OID, map[string]string{"Sec-Fetch-Site": "same-origin"}); got != http.StatusSeeOther {
		t.Errorf("revoke = %d, want 303", got)
	}
	if p.IsRefreshTokenAccepted(rt) {
		t.Error("revoked through the admin page, yet accepted")
	}

	status, _, raw := get(t, p.hc, p.URL+"/devidp/status", nil)
	var st devidp.Status
	if err := json.Unmarshal([]byte(raw), &st); err != nil || status != 200 {
		t.Fatalf("status = %d %s", status, raw)
	}
	var revoked []string
	for _, a := range st.Accounts {
		if a.Revoked {
			revoked = append(revoked, a.UserPrincipalName)
		}
	}
	sort.Strings(revoked)
	if !reflect.DeepEqual(revoked, []string{"grace@contoso.com"}) || st.TokenRequests["authorization_code"] != 1 {
		t.Errorf("status = %+v", st)
	}
	if strings.Contains(raw, rt) || strings.Contains(page, rt) {
		t.Error("a refresh token is shown")
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []devidp.Config{
		{RedirectURL: redirect, Now: time.Now},
		{ClientID: clientID, Now: time.Now},
		{ClientID: clientID, RedirectURL: redirect, Accounts: []devidp.Account{{OID: "x", TenantID: "t"}}, Now: time.Now},
		{ClientID: clientID, RedirectURL: redirect, Accounts: []devidp.Account{ada, ada}, Now: time.Now},
		{ClientID: clientID, RedirectURL: redirect}, // no clock
	} {
		if _, err := devidp.New(cfg); err == nil || !strings.HasPrefix(err.Error(), "devidp: ") {
			t.Errorf("New(%+v) = %v, want a devidp error", cfg, err)
		}
	}
}
