package msidentity

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

func TestNewRejectsIncompleteConfig(t *testing.T) {
	cred := NewSecretCredential(&secrets{cached: testSecret})
	good := Config{ClientID: testClientID, RedirectURL: testRedirect, Scopes: testScopes, Credential: cred, Now: time.Now}
	tests := []struct {
		name   string
		change func(*Config)
	}{
		{"no client id", func(c *Config) { c.ClientID = "" }},
		{"no redirect url", func(c *Config) { c.RedirectURL = "" }},
		{"relative redirect url", func(c *Config) { c.RedirectURL = "/api/callback" }},
		{"no scopes", func(c *Config) { c.Scopes = []string{" "} }},
		{"no credential", func(c *Config) { c.Credential = nil }},
		{"no clock", func(c *Config) { c.Now = nil }},
		{"authority not a URL", func(c *Config) { c.AuthorityHost = "login.microsoftonline.com" }},
		{"graph not http", func(c *Config) { c.GraphURL = "ftp://graph.microsoft.com" }},
		{"tenant with slash", func(c *Config) { c.Tenant = "common/x" }},
	}
	if _, err := New(good); err != nil {
		t.Fatalf("New(good) = %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.change(&cfg)
			if _, err := New(cfg); err == nil || !strings.HasPrefix(err.Error(), "msidentity: ") {
				t.Fatalf("New = %v, want an msidentity error", err)
			}
		})
	}
}

func TestAuthCodeURL(t *testing.T) {
	const verifier = "dBjftJeZ4CK-mB2aDkkT7Vh5p2mWWsM0HtCZYo8yXUw"
	sum := sha256.Sum256([]byte(verifier))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	tests := []struct {
		name      string
		authority string
		tenant    string
		scopes    []string
		loginHint string
		want      url.Values
		wantBase  string
	}{
		{
			name: "login hint given", authority: "https://login.microsoftonline.com", tenant: "common",
			scopes: testScopes, loginHint: "ada@contoso.com",
			wantBase: "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
			want: url.Values{
				"client_id": {testClientID}, "response_type": {"code"}, "redirect_uri": {testRedirect},
				"response_mode": {"query"}, "scope": {"User.Read Files.ReadWrite.All offline_access openid profile"},
				"state": {"st-1"}, "code_challenge": {challenge}, "code_challenge_method": {"S256"},
				"login_hint": {"ada@contoso.com"},
			},
		},
		{
			name: "no login hint: account picker; sovereign cloud; duplicates dropped", authority: "https://login.microsoftonline.us/", tenant: "organizations",
			scopes:   []string{"User.Read", "openid", "user.read", "Files.ReadWrite.All offline_access", "PROFILE"},
			wantBase: "https://login.microsoftonline.us/organizations/oauth2/v2.0/authorize",
			want: url.Values{
				"client_id": {testClientID}, "response_type": {"code"}, "redirect_uri": {testRedirect},
				"response_mode": {"query"}, "scope": {"User.Read openid Files.ReadWrite.All offline_access PROFILE"},
				"state": {"st-1"}, "code_challenge": {challenge}, "code_challenge_method": {"S256"},
				"prompt": {"select_account"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(Config{AuthorityHost: tt.authority, Tenant: tt.tenant, ClientID: testClientID, RedirectURL: testRedirect,
				Scopes: tt.scopes, Now: time.Now, Credential: NewSecretCredential(&secrets{})})
			if err != nil {
				t.Fatal(err)
			}
			got, err := url.Parse(c.AuthCodeURL("st-1", verifier, tt.loginHint))
			if err != nil {
				t.Fatal(err)
			}
			if base := got.Scheme + "://" + got.Host + got.Path; base != tt.wantBase {
				t.Errorf("endpoint = %s, want %s", base, tt.wantBase)
			}
			if q := got.Query(); !reflect.DeepEqual(q, tt.want) {
				t.Errorf("query =\n %v\nwant\n %v", q, tt.want)
			}
		})
	}
}

func TestExchangeSendsPKCEAndSecretAndReadsAccount(t *testing.T) {
	const verifier = "verifier-0123456789-0123456789-0123456789-abc"
	clk := newClock()
	var srv *standIn
	srv = newStandIn(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/common/oauth2/v2.0/token" {
			http.NotFound(w, r)
			return
		}
		if r.PostForm.Get("code_verifier") != verifier {
			writeJSONBody(w, 400, []byte(`{"error":"invalid_grant","error_description":"AADSTS501481: The Code_Verifier does not match the code_challenge supplied in the authorization request.","error_codes":[501481]}`))
			return
		}
		writeJSONBody(w, 200, tokenJSON(t, map[string]any{"id_token": jwtOf(t, goodClaims(srv.URL))}))
	})
	c := newTestClient(t, srv.URL, withClock(clk))

	got, err := c.Exchange(context.Background(), "code-1", verifier)
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	want := Tokens{
		AccessToken: "at-1", RefreshToken: "rt-2", ExpiresAt: clk.Now().Add(time.Hour),
		Scopes:  []string{"User.Read", "Files.ReadWrite.All", "openid", "profile", "email"},
		Account: connection.Account{ID: testOID, TenantID: testTenantID},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Exchange =\n %+v\nwant\n %+v", got, want)
	}
	req := srv.last(t)
	wantForm := url.Values{
		"grant_type": {"authorization_code"}, "code": {"code-1"}, "redirect_uri": {testRedirect},
		"code_verifier": {verifier}, "client_id": {testClientID}, "client_secret": {testSecret},
	}
	if !reflect.DeepEqual(req.Form, wantForm) {
		t.Errorf("form =\n %v\nwant\n %v", req.Form, wantForm)
	}
	if h := req.Header.Get("Authorization"); h != "" {
		t.Errorf("Authorization header = %q, want none (credentials go in the body)", h)
	}

	_, err = c.Exchange(context.Background(), "code-1", "another-verifier-0123456789-0123456789-0123")
	var e *Error
	if !errors.As(err, &e) || e.ErrorClass() != connection.ClassConfiguration || !e.HasErrorCode(501481) {
		t.Fatalf("Exchange with the wrong verifier = %v, want a configuration *Error with 501481", err)
	}
}

func TestExchangeChecksIDToken(t *testing.T) {
	tests := []struct {
		name   string
		tenant string
		token  func(base string) any // nil entry: no id_token
		ok     bool
	}{
		{name: "good", token: func(b string) any { return jwtOf(t, goodClaims(b)) }, ok: true},
		{name: "aud as an array with the client id", token: func(b string) any {
			c := goodClaims(b)
			c["aud"] = []string{"other", testClientID}
			return jwtOf(t, c)
		}, ok: true},
		{name: "configured tenant matches", tenant: testTenantID, token: func(b string) any { return jwtOf(t, goodClaims(b)) }, ok: true},
		{name: "wrong aud", token: func(b string) any {
			c := goodClaims(b)
			c["aud"] = "00000003-0000-0000-c000-000000000000"
			return jwtOf(t, c)
		}},
		{name: "wrong iss host (public cloud issuer, other authority configured)", token: func(b string) any {
			c := goodClaims(b)
			c["iss"] = "https://login.microsoftonline.com/" + testTenantID + "/v2.0"
			return jwtOf(t, c)
		}},
		{name: "iss for another tenant", token: func(b string) any {
			c := goodClaims(b)
			c["iss"] = b + "/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0"
			return jwtOf(t, c)
		}},
		{name: "v1 issuer", token: func(b string) any {
			c := goodClaims(b)
			c["iss"] = "https://sts.windows.net/" + testTenantID + "/"
			return jwtOf(t, c)
		}},
		{name: "missing oid", token: func(b string) any {
			c := goodClaims(b)
			delete(c, "oid")
			return jwtOf(t, c)
		}},
		{name: "missing tid", token: func(b string) any {
			c := goodClaims(b)
			delete(c, "tid")
			return jwtOf(t, c)
		}},
		{name: "another tenant than the configured one", tenant: "0f3c2a1b-8e7d-4c6b-a5f4-3e2d1c0b9a87", token: func(b string) any { return jwtOf(t, goodClaims(b)) }},
		{name: "missing id_token", token: func(string) any { return nil }},
		{name: "not a JWT", token: func(string) any { return "abc.def" }},
		{name: "payload not base64", token: func(string) any { return "a.!!!.c" }},
		{name: "payload not JSON", token: func(string) any { return "a." + base64.RawURLEncoding.EncodeToString([]byte("[1,2")) + ".c" }},
		{name: "id_token not a string", token: func(string) any { return 42 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var srv *standIn
			srv = newStandIn(t, func(w http.ResponseWriter, r *http.Request) {
				writeJSONBody(w, 200, tokenJSON(t, map[string]any{"id_token": tt.token(srv.URL)}))
			})
			opts := []option{}
			if tt.tenant != "" {
				opts = append(opts, withTenant(tt.tenant))
			}
			c := newTestClient(t, srv.URL, opts...)
			got, err := c.Exchange(context.Background(), "code", "verifier")
			if tt.ok {
				if err != nil || got.Account.ID != testOID || got.Account.TenantID != testTenantID {
					t.Fatalf("Exchange = %+v, %v; want the account", got.Account, err)
				}
				return
			}
			var ie *IDTokenError
			if !errors.As(err, &ie) {
				t.Fatalf("Exchange error = %v, want *IDTokenError", err)
			}
			if connection.ClassOf(err) != connection.ClassConfiguration || connection.CodeOf(err, "") != "invalid_id_token" {
				t.Errorf("class, code = %v, %q; want configuration, invalid_id_token", connection.ClassOf(err), connection.CodeOf(err, ""))
			}
			if got.AccessToken != "" {
				t.Errorf("tokens returned with a bad id_token")
			}
		})
	}
}

func TestRefreshRequestAndResponse(t *testing.T) {
	clk := newClock()
	tests := []struct {
		name     string
		cred     func() ClientCredential
		body     map[string]any
		wantForm url.Values
		wantRT   string
	}{
		{
			name: "secret, rotated refresh token",
			cred: func() ClientCredential { return NewSecretCredential(&secrets{cached: testSecret}) },
			body: map[string]any{"refresh_token": "rt-new"},
			wantForm: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"rt-old"}, "client_id": {testClientID},
				"scope": {"User.Read Files.ReadWrite.All offline_access"}, "client_secret": {testSecret}},
			wantRT: "rt-new",
		},
		{
			name: "assertion, no refresh token in the answer (caller keeps its own)",
			cred: func() ClientCredential {
				return NewAssertionCredential(&fakeTokenCredential{tokens: []string{"mi-1"}, ttl: time.Hour, now: clk.Now}, clk.Now)
			},
			body: map[string]any{"refresh_token": nil},
			wantForm: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"rt-old"}, "client_id": {testClientID},
				"scope": {"User.Read Files.ReadWrite.All offline_access"}, "client_assertion_type": {AssertionType}, "client_assertion": {"mi-1"}},
			wantRT: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newStandIn(t, func(w http.ResponseWriter, r *http.Request) {
				writeJSONBody(w, 200, tokenJSON(t, tt.body))
			})
			c := newTestClient(t, srv.URL, withClock(clk), withCredential(tt.cred()))
			got, err := c.Refresh(context.Background(), "rt-old")
			if err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			if got.AccessToken != "at-1" || got.RefreshToken != tt.wantRT || !got.ExpiresAt.Equal(clk.Now().Add(time.Hour)) || got.Account != (connection.Account{}) {
				t.Errorf("Refresh = %+v", got)
			}
			req := srv.last(t)
			if req.Method != http.MethodPost || req.Path != "/common/oauth2/v2.0/token" {
				t.Errorf("request = %s %s", req.Method, req.Path)
			}
			if !reflect.DeepEqual(req.Form, tt.wantForm) {
				t.Errorf("form =\n %v\nwant\n %v", req.Form, tt.wantForm)
			}
			if h := req.Header.Get("Authorization"); h != "" {
				t.Errorf("Authorization header = %q, want none", h)
			}
			if ct := req.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
				t.Errorf("Content-Type = %q", ct)
			}
		})
	}
}

func TestExchangeWithAssertionSendsNoSecret(t *testing.T) {
	clk := newClock()
	var srv *standIn
	srv = newStandIn(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSONBody(w, 200, tokenJSON(t, map[string]any{"id_token": jwtOf(t, goodClaims(srv.URL))}))
	})
	cred := NewAssertionCredential(&fakeTokenCredential{tokens: []string{"mi-1"}, ttl: time.Hour, now: clk.Now}, clk.Now)
	c := newTestClient(t, srv.URL, withClock(clk), withCredential(cred))
	if _, err := c.Exchange(context.Background(), "code", "verifier"); err != nil {
		t.Fatal(err)
	}
	form := srv.last(t).Form
	if _, ok := form["client_secret"]; ok {
		t.Errorf("client_secret sent in assertion mode: form %v", form)
	}
	if form.Get("client_assertion_type") != AssertionType || form.Get("client_assertion") != "mi-1" || form.Get("client_id") != testClientID {
		t.Errorf("form = %v, want client_id, client_assertion_type and client_assertion", form)
	}
}

func TestRefreshWithoutTokenMakesNoRequest(t *testing.T) {
	srv := newStandIn(t, func(w http.ResponseWriter, r *http.Request) { t.Error("unexpected request") })
	c := newTestClient(t, srv.URL)
	if _, err := c.Refresh(context.Background(), ""); err == nil {
		t.Fatal("Refresh(\"\") succeeded")
	}
}

func TestMe(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		header    map[string]string
		want      Profile
		wantEmail string
		wantCode  string
		wantClass connection.Class
		wantTrace string
	}{
		{
			name: "work account", status: 200,
			body:      `{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#users(id,displayName,mail,userPrincipalName)/$entity","id":"` + testOID + `","displayName":"Ada Lovelace","mail":"ada@contoso.com","userPrincipalName":"ada_contoso.com#EXT#@fabrikam.onmicrosoft.com"}`,
			want:      Profile{ID: testOID, DisplayName: "Ada Lovelace", Mail: "ada@contoso.com", UserPrincipalName: "ada_contoso.com#EXT#@fabrikam.onmicrosoft.com"},
			wantEmail: "ada@contoso.com",
		},
		{
			name: "personal account: mail null", status: 200,
			body:      `{"id":"6b1e4f0a9c2d7e35","displayName":"Alan Turing","mail":null,"userPrincipalName":"alan.turing@outlook.com"}`,
			want:      Profile{ID: "6b1e4f0a9c2d7e35", DisplayName: "Alan Turing", UserPrincipalName: "alan.turing@outlook.com"},
			wantEmail: "alan.turing@outlook.com",
		},
		{
			name: "expired token", status: 401,
			body:     `{"error":{"code":"InvalidAuthenticationToken","message":"Lifetime validation failed, the token is expired.","innerError":{"date":"2026-11-25T23:30:00","request-id":"req-1","client-request-id":"creq-1"}}}`,
			wantCode: "InvalidAuthenticationToken", wantClass: connection.ClassConfiguration, wantTrace: "req-1",
		},
		{
			name: "throttled", status: 429, header: map[string]string{"Retry-After": "7"},
			body:     `{"error":{"code":"TooManyRequests","message":"Too many requests","innerError":{"request-id":"req-2"}}}`,
			wantCode: "TooManyRequests", wantClass: connection.ClassTransient, wantTrace: "req-2",
		},
		{
			name: "no id", status: 200, body: `{"displayName":"x"}`,
			wantCode: CodeInvalidResponse, wantClass: connection.ClassTransient,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newStandIn(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v1.0/me" || r.Header.Get("Authorization") != "Bearer at-graph" {
					http.Error(w, "bad request", 400)
					return
				}
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				writeJSONBody(w, tt.status, []byte(tt.body))
			})
			c := newTestClient(t, srv.URL)
			got, err := c.Me(context.Background(), "at-graph")
			if tt.wantCode == "" {
				if err != nil || got != tt.want || got.Email() != tt.wantEmail {
					t.Fatalf("Me = %+v (email %q), %v; want %+v (email %q)", got, got.Email(), err, tt.want, tt.wantEmail)
				}
				acct, err := c.Profile(context.Background(), "at-graph")
				if err != nil || acct != (connection.Account{Email: tt.wantEmail, DisplayName: tt.want.DisplayName}) {
					t.Errorf("Profile = %+v, %v", acct, err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Me error = %v, want *Error", err)
			}
			if e.Code != tt.wantCode || e.ErrorClass() != tt.wantClass || e.TraceID != tt.wantTrace || e.Op != "me" {
				t.Errorf("error = %+v; want code %s class %v trace %q", e, tt.wantCode, tt.wantClass, tt.wantTrace)
			}
			if strings.Contains(err.Error(), "Lifetime validation") {
				t.Errorf("Error() = %q contains Graph's message", err)
			}
		})
	}
	t.Run("a Graph 429 does not pause the token endpoint", func(t *testing.T) {
		var srv *standIn
		srv = newStandIn(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/v1.0/me" {
				w.Header().Set("Retry-After", "60")
				writeJSONBody(w, 429, []byte(`{"error":{"code":"TooManyRequests","message":"x"}}`))
				return
			}
			writeJSONBody(w, 200, tokenJSON(t, nil))
		})
		c := newTestClient(t, srv.URL)
		if _, err := c.Me(context.Background(), "at-graph"); connection.ClassOf(err) != connection.ClassTransient {
			t.Fatalf("Me = %v, want transient", err)
		}
		if ra, _ := connection.RetryAfterOf(func() error { _, err := c.Me(context.Background(), "at-graph"); return err }()); ra != time.Minute {
			t.Errorf("Me RetryAfter = %v, want 1m", ra)
		}
		if _, err := c.Refresh(context.Background(), "rt"); err != nil {
			t.Fatalf("Refresh after a Graph 429 = %v, want success", err)
		}
	})
}
