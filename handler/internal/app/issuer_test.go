package app_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/megdocs/msconnector/handler/internal/devidp"
)

// The id_token's issuer comes from the authority's discovery document, and
// its host is not always the authority's (contract: GET /api/callback;
// facts/microsoft-identity.md). The stand-in plays the authority on
// loopback and announces, and issues as, another host, as Azure China and
// login.windows.net do.

func TestConnectWithTheDiscoveredIssuer(t *testing.T) {
	tests := []struct {
		name       string
		tenant     string // MICROSOFT_TENANT ("" = default common)
		issuerBase string // "" = the stand-in's own address
		account    string
		wantTenant string
	}{
		{name: "public cloud: issuer on the authority's host", account: "ada@contoso.com", wantTenant: devidp.ContosoTenantID},
		{name: "China-like split: authority here, issuer login.partner.microsoftonline.cn",
			issuerBase: "https://login.partner.microsoftonline.cn", account: "grace@contoso.com", wantTenant: devidp.ContosoTenantID},
		{name: "alias: authority here (login.windows.net), issuer login.microsoftonline.com", tenant: "organizations",
			issuerBase: "https://login.microsoftonline.com", account: "ada@contoso.com", wantTenant: devidp.ContosoTenantID},
		{name: "consumers: the document names the personal tenant", tenant: "consumers",
			issuerBase: "https://login.microsoftonline.com", account: "alan.turing@outlook.com", wantTenant: devidp.PersonalTenantID},
		{name: "single tenant with a split issuer", tenant: devidp.ContosoTenantID,
			issuerBase: "https://login.partner.microsoftonline.cn", account: "grace@contoso.com", wantTenant: devidp.ContosoTenantID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			settings := map[string]string{}
			if tt.tenant != "" {
				settings["MICROSOFT_TENANT"] = tt.tenant
			}
			s := start(t, settings)
			s.IDP.SetIssuerBase(tt.issuerBase)

			s.connect(t, "iss-1", tt.account)
			r := s.cms(t, http.MethodGet, "/api/connections/iss-1", nil)
			if r.status != http.StatusOK {
				t.Fatalf("status after connect: %d %s", r.status, r.body)
			}
			acct, _ := r.json(t)["account"].(map[string]any)
			if acct["tenant_id"] != tt.wantTenant {
				t.Errorf("account = %v, want tenant %s", acct, tt.wantTenant)
			}

			// A second connect uses the cached document.
			s.connect(t, "iss-2", tt.account)
			if n := s.IDP.DiscoveryRequests(); n != 1 {
				t.Errorf("discovery document fetched %d times for two connects, want 1", n)
			}
		})
	}
}

// callbackOf signs account in for a new connect of userID and returns the
// browser and the callback URL Microsoft sent it to.
func (s *stack) callbackOf(t *testing.T, userID, account string) (browser, string) {
	t.Helper()
	b := newBrowser(t)
	auth := b.begin(t, s.session(t, userID))
	cb, err := s.IDP.SignIn(context.Background(), nil, auth.String(), account)
	if err != nil {
		t.Fatal(err)
	}
	return b, cb.String()
}

func TestCallbackWithoutTheDiscoveryDocumentIsAServerError(t *testing.T) {
	s := start(t, nil)
	s.IDP.FailDiscovery(&devidp.Response{Status: http.StatusServiceUnavailable, Body: []byte("<html>Service Unavailable</html>")})

	b, cb := s.callbackOf(t, "nodisc", "ada@contoso.com")
	r := do(t, b.Client, http.MethodGet, cb, "", nil)
	loc, _ := url.Parse(r.header.Get("Location"))
	if q := loc.Query(); r.status != http.StatusFound || q.Get("microsoft") != "error" || q.Get("reason") != "server_error" {
		t.Fatalf("callback: %d %q, want 302 with microsoft=error&reason=server_error", r.status, loc)
	}
	if r := s.cms(t, http.MethodGet, "/api/connections/nodisc", nil); r.status != http.StatusNotFound {
		t.Errorf("status after the failed callback: %d %s, want 404", r.status, r.body)
	}
	if n := s.IDP.TokenRequests("authorization_code"); n != 0 {
		t.Errorf("%d code exchanges without a discovery document, want 0 (the code stays unspent)", n)
	}
	if s.IDP.DiscoveryRequests() == 0 {
		t.Error("the discovery document was never requested")
	}
	docURL := s.IdentityURL + "/common/v2.0/.well-known/openid-configuration"
	found := false
	for _, ev := range s.logs.Events("oauth_failed") {
		if ev["reason"] == "server_error" && ev["user_id"] == "nodisc" && strings.Contains(ev["error"].(string), docURL) {
			found = true
		}
	}
	if !found {
		t.Errorf("no oauth_failed line with reason server_error naming %s: %v", docURL, s.logs.Events("oauth_failed"))
	}
}

func TestIDTokenFromTheAuthoritysHostIsRejectedWhenTheDocumentSaysOtherwise(t *testing.T) {
	s := start(t, nil)
	s.IDP.SetIssuerBase("https://login.partner.microsoftonline.cn")
	// What the connector accepted before issue 12: iss on the authority's
	// own host. The document names another host, so it must be refused.
	s.IDP.ForgeIssuer(s.IdentityURL)

	b, cb := s.callbackOf(t, "forged", "ada@contoso.com")
	r := do(t, b.Client, http.MethodGet, cb, "", nil)
	loc, _ := url.Parse(r.header.Get("Location"))
	if q := loc.Query(); r.status != http.StatusFound || q.Get("microsoft") != "error" || q.Get("reason") != "exchange_failed" {
		t.Fatalf("callback: %d %q, want 302 with microsoft=error&reason=exchange_failed", r.status, loc)
	}
	if r := s.cms(t, http.MethodGet, "/api/connections/forged", nil); r.status != http.StatusNotFound {
		t.Errorf("status after the rejected id_token: %d %s, want 404", r.status, r.body)
	}
	if !s.logs.Has("oauth_failed", "code", "invalid_id_token") {
		t.Errorf("no oauth_failed line with code invalid_id_token: %v", s.logs.Events("oauth_failed"))
	}

	// The same stand-in issuing as its document says is accepted.
	s.IDP.ForgeIssuer("")
	s.connect(t, "honest", "ada@contoso.com")
	if r := s.cms(t, http.MethodGet, "/api/connections/honest", nil); r.status != http.StatusOK {
		t.Errorf("status after an honest connect: %d %s", r.status, r.body)
	}
}
