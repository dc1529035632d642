package devidp_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/megdocs/msconnector/handler/internal/devidp"
)

func (p *idp) tokenAt(t *testing.T, tenant string, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := p.hc.PostForm(p.URL+"/"+tenant+"/oauth2/v2.0/token", form)
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

func ccForm(set map[string]string) url.Values {
	f := url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "client_secret": {secret},
		"scope": {"https://graph.microsoft.com/.default"}}
	for k, v := range set {
		if v == "" {
			f.Del(k)
		} else {
			f.Set(k, v)
		}
	}
	return f
}

func TestClientCredentials(t *testing.T) {
	p := newIDP(t)
	status, body := p.tokenAt(t, devidp.ContosoTenantID, ccForm(nil))
	if status != http.StatusOK || body["token_type"] != "Bearer" || body["access_token"] == "" || body["expires_in"] == nil || body["ext_expires_in"] == nil {
		t.Fatalf("client credentials = %d %v", status, body)
	}
	for _, k := range []string{"refresh_token", "id_token", "scope"} {
		if _, ok := body[k]; ok {
			t.Errorf("an app-only token answer has %s", k)
		}
	}
	// An app-only token has no user: Graph /me does not accept it.
	req, _ := http.NewRequest(http.MethodGet, p.URL+"/v1.0/me", nil)
	req.Header.Set("Authorization", "Bearer "+body["access_token"].(string))
	if resp, err := p.hc.Do(req); err != nil || resp.StatusCode == http.StatusOK {
		t.Errorf("/me with an app-only token: %v %v", resp, err)
	}
	if got := p.TokenRequests("client_credentials"); got != 1 {
		t.Errorf("TokenRequests(client_credentials) = %d, want 1", got)
	}

	for _, tc := range []struct {
		name         string
		tenant       string
		set          map[string]string
		status       int
		error        string
		aadsts       int
		descContains string
	}{
		{"unknown application", devidp.ContosoTenantID, map[string]string{"client_id": "99999999-0000-4000-8000-000000000000"}, 400, "unauthorized_client", 700016, "was not found in the directory"},
		{"another tenant", "0f0f0f0f-1111-4222-8333-444455556666", nil, 400, "unauthorized_client", 700016, "0f0f0f0f-1111-4222-8333-444455556666"},
		{"common names no tenant", "common", nil, 400, "invalid_request", 50059, "No tenant-identifying information"},
		{"wrong secret", devidp.ContosoTenantID, map[string]string{"client_secret": "wrong"}, 401, "invalid_client", 7000215, "Invalid client secret"},
		{"no scope", devidp.ContosoTenantID, map[string]string{"scope": ""}, 400, "invalid_request", 900144, "'scope'"},
		{"delegated scope", devidp.ContosoTenantID, map[string]string{"scope": "User.Read"}, 400, "invalid_scope", 1002012, "/.default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := p.tokenAt(t, tc.tenant, ccForm(tc.set))
			wantOAuthError(t, status, body, tc.status, tc.error, tc.aadsts)
			if d, _ := body["error_description"].(string); !strings.Contains(d, tc.descContains) {
				t.Errorf("error_description = %q, want it to contain %q", d, tc.descContains)
			}
		})
	}
}

// ExpireClientSecrets plants an expired secret: every grant that sends it
// gets AADSTS7000222 (not 7000215), until new secrets are set.
func TestExpiredClientSecret(t *testing.T) {
	p := newIDP(t)
	code := p.code(t, ada.UserPrincipalName, nil)
	p.ExpireClientSecrets()
	status, body := p.tokenAt(t, devidp.ContosoTenantID, ccForm(nil))
	wantOAuthError(t, status, body, 401, "invalid_client", 7000222)
	if d, _ := body["error_description"].(string); !strings.Contains(d, "client secret keys for app '"+clientID+"' are expired") {
		t.Errorf("error_description = %q", d)
	}
	status, body = p.token(t, codeForm(code))
	wantOAuthError(t, status, body, 401, "invalid_client", 7000222)

	p.SetClientSecrets("new-secret")
	if status, body := p.tokenAt(t, devidp.ContosoTenantID, ccForm(map[string]string{"client_secret": "new-secret"})); status != 200 {
		t.Errorf("a new secret after the expired one = %d %v", status, body)
	}
	if status, body := p.tokenAt(t, devidp.ContosoTenantID, ccForm(nil)); status != 401 || body["error_codes"].([]any)[0] != float64(7000215) {
		t.Errorf("the old (deleted) secret = %d %v, want 7000215", status, body)
	}
}

func TestAdminExpireSecret(t *testing.T) {
	p := newIDP(t)
	page := httptest.NewRecorder()
	p.ServeHTTP(page, httptest.NewRequest(http.MethodGet, "/devidp/", nil))
	if !strings.Contains(page.Body.String(), `action="/devidp/expire-secret"`) {
		t.Error("the admin page has no expire-secret button")
	}
	cross := httptest.NewRequest(http.MethodPost, "/devidp/expire-secret", nil)
	cross.Header.Set("Sec-Fetch-Site", "cross-site")
	w := httptest.NewRecorder()
	p.ServeHTTP(w, cross)
	if w.Code != http.StatusForbidden {
		t.Errorf("cross-site expire = %d, want 403", w.Code)
	}
	if status, _ := p.tokenAt(t, devidp.ContosoTenantID, ccForm(nil)); status != 200 {
		t.Fatal("a refused cross-site request expired the secret")
	}
	w = httptest.NewRecorder()
	p.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/devidp/expire-secret", nil))
	if w.Code != http.StatusSeeOther {
		t.Errorf("expire = %d, want 303", w.Code)
	}
	status, body := p.tokenAt(t, devidp.ContosoTenantID, ccForm(nil))
	wantOAuthError(t, status, body, 401, "invalid_client", 7000222)
}

// A removed federated credential refuses every assertion, fresh ones too.
func TestRemovedFederatedCredential(t *testing.T) {
	p := newIDP(t, func(c *devidp.Config) { c.ClientSecret = "" })
	_, mi := p.miToken(t, devidp.AssertionAudience, "id-header")
	form := ccForm(map[string]string{"client_secret": "", "client_assertion_type": devidp.AssertionType, "client_assertion": mi["access_token"].(string)})
	if status, body := p.tokenAt(t, devidp.ContosoTenantID, form); status != 200 {
		t.Fatalf("with the federated credential: %d %v", status, body)
	}
	p.RemoveFederatedCredential()
	status, body := p.tokenAt(t, devidp.ContosoTenantID, form)
	wantOAuthError(t, status, body, 401, "invalid_client", 70021)
	p.RestoreFederatedCredential()
	if status, _ := p.tokenAt(t, devidp.ContosoTenantID, form); status != 200 {
		t.Errorf("after restoring: %d", status)
	}
}
