package devidp_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/megdocs/msconnector/handler/internal/devidp"
)

// discovery reads the stand-in's discovery document for tenant.
func (p *idp) discovery(t *testing.T, tenant string) (int, map[string]any) {
	t.Helper()
	status, h, body := get(t, p.hc, p.URL+"/"+tenant+"/v2.0/.well-known/openid-configuration", nil)
	var doc map[string]any
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("document is not JSON: %v\n%s", err, body)
	}
	if ct := h.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	return status, doc
}

func TestDiscoveryDocumentIsShapedLikeMicrosofts(t *testing.T) {
	tests := []struct {
		name, tenant, issuerBase string
		wantIssuer, wantSegment  string
		wantCloud                string
	}{
		{name: "common, own address", tenant: "common", wantIssuer: "{self}/{tenantid}/v2.0", wantSegment: "common"},
		{name: "organizations, China-like", tenant: "organizations", issuerBase: "https://login.partner.microsoftonline.cn",
			wantIssuer: "https://login.partner.microsoftonline.cn/{tenantid}/v2.0", wantSegment: "organizations", wantCloud: "partner.microsoftonline.cn"},
		{name: "consumers: the fixed personal tenant", tenant: "consumers", issuerBase: "https://login.microsoftonline.com",
			wantIssuer: "https://login.microsoftonline.com/" + devidp.PersonalTenantID + "/v2.0", wantSegment: "consumers", wantCloud: "microsoftonline.com"},
		{name: "tenant ID (any case)", tenant: "4A6F2C1E-8B3D-4E7F-9A0C-5D1B2E3F4A6B",
			wantIssuer: "{self}/" + devidp.ContosoTenantID + "/v2.0", wantSegment: devidp.ContosoTenantID},
		{name: "domain: the tenant it belongs to", tenant: "contoso.onmicrosoft.com",
			wantIssuer: "{self}/" + devidp.ContosoTenantID + "/v2.0", wantSegment: devidp.ContosoTenantID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newIDP(t, func(c *devidp.Config) { c.IssuerBase = tt.issuerBase })
			status, doc := p.discovery(t, tt.tenant)
			if status != http.StatusOK {
				t.Fatalf("status %d: %v", status, doc)
			}
			self := p.URL
			want := map[string]string{
				"issuer":                 replaceSelf(tt.wantIssuer, self),
				"authorization_endpoint": self + "/" + tt.wantSegment + "/oauth2/v2.0/authorize",
				"token_endpoint":         self + "/" + tt.wantSegment + "/oauth2/v2.0/token",
				"jwks_uri":               self + "/" + tt.wantSegment + "/discovery/v2.0/keys",
			}
			for k, v := range want {
				if doc[k] != v {
					t.Errorf("%s = %v, want %s", k, doc[k], v)
				}
			}
			if tt.wantCloud != "" && doc["cloud_instance_name"] != tt.wantCloud {
				t.Errorf("cloud_instance_name = %v, want %s", doc["cloud_instance_name"], tt.wantCloud)
			}
			for _, k := range []string{"response_types_supported", "scopes_supported", "id_token_signing_alg_values_supported",
				"token_endpoint_auth_methods_supported", "claims_supported", "end_session_endpoint", "userinfo_endpoint", "msgraph_host"} {
				if _, ok := doc[k]; !ok {
					t.Errorf("document lacks %s", k)
				}
			}
			// The advertised endpoints are served.
			if st, _, body := get(t, p.hc, doc["jwks_uri"].(string), nil); st != http.StatusOK || body != `{"keys":[]}` {
				t.Errorf("jwks_uri: %d %s", st, body)
			}
			if n := p.DiscoveryRequests(); n != 1 {
				t.Errorf("DiscoveryRequests = %d, want 1", n)
			}
		})
	}
}

func replaceSelf(s, self string) string {
	const tag = "{self}"
	if len(s) >= len(tag) && s[:len(tag)] == tag {
		return self + s[len(tag):]
	}
	return s
}

func TestDiscoveryOfAnUnknownDomain(t *testing.T) {
	accounts := append(devidp.DefaultAccounts(), devidp.Account{OID: "7e6d5c4b-3a29-4817-9605-f4e3d2c1b0a9", TenantID: "0f3c2a1b-8e7d-4c6b-a5f4-3e2d1c0b9a87",
		DisplayName: "Fabrikam user", UserPrincipalName: "user@fabrikam.com"})
	p := newIDP(t, func(c *devidp.Config) { c.Accounts = accounts })
	status, doc := p.discovery(t, "nowhere.example")
	wantOAuthError(t, status, doc, http.StatusBadRequest, "invalid_tenant", 90002)
}

func TestIDTokenIssuerFollowsTheDocument(t *testing.T) {
	p := newIDP(t)
	issOf := func() string {
		t.Helper()
		status, body := p.token(t, codeForm(p.code(t, ada.UserPrincipalName, nil)))
		if status != http.StatusOK {
			t.Fatalf("token: %d %v", status, body)
		}
		return claimsOf(t, body["id_token"].(string))["iss"].(string)
	}
	if got, want := issOf(), p.URL+"/"+ada.TenantID+"/v2.0"; got != want {
		t.Errorf("iss = %s, want %s (own address)", got, want)
	}
	p.SetIssuerBase("https://login.partner.microsoftonline.cn/")
	if got, want := issOf(), "https://login.partner.microsoftonline.cn/"+ada.TenantID+"/v2.0"; got != want {
		t.Errorf("iss = %s, want %s", got, want)
	}
	if _, doc := p.discovery(t, "common"); doc["issuer"] != "https://login.partner.microsoftonline.cn/{tenantid}/v2.0" {
		t.Errorf("issuer = %v", doc["issuer"])
	}
	p.ForgeIssuer(p.URL)
	if got, want := issOf(), p.URL+"/"+ada.TenantID+"/v2.0"; got != want {
		t.Errorf("forged iss = %s, want %s", got, want)
	}
	if _, doc := p.discovery(t, "common"); doc["issuer"] != "https://login.partner.microsoftonline.cn/{tenantid}/v2.0" {
		t.Errorf("ForgeIssuer changed the document: issuer = %v", doc["issuer"])
	}

	p.FailDiscovery(&devidp.Response{Status: http.StatusServiceUnavailable, Body: []byte(`{"x":1}`)})
	if st, _, _ := get(t, p.hc, p.URL+"/common/v2.0/.well-known/openid-configuration", nil); st != http.StatusServiceUnavailable {
		t.Errorf("failing document: %d, want 503", st)
	}
	p.FailDiscovery(nil)
	if st, _ := p.discovery(t, "common"); st != http.StatusOK {
		t.Errorf("after FailDiscovery(nil): %d", st)
	}
}
