package devidp

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// openIDConfiguration is GET /{tenant}/v2.0/.well-known/openid-configuration,
// the OpenID Connect discovery document, shaped like Microsoft's: the
// endpoints are this server's (under the tenant segment as given for
// common, organizations and consumers, under the tenant ID for a tenant),
// and `issuer` is the template {issuer base}/{tenantid}/v2.0 for common and
// organizations, the personal accounts' tenant for consumers, and the
// tenant itself for a tenant ID or domain. The issuer base is this server's
// address unless SetIssuerBase (Config.IssuerBase) says otherwise, as
// Azure China's and login.windows.net's documents name another host.
func (s *Server) openIDConfiguration(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.discoveries++
	fail := s.discoveryFailure
	issuerBase := s.issuerBaseLocked(r)
	s.mu.Unlock()
	if fail != nil {
		fail.write(w, s, r)
		return
	}
	tenant := r.PathValue("tenant")
	segment, issuerTenant, ok := s.resolveTenant(tenant)
	if !ok {
		s.writeOAuthError(w, r, oauthError{status: http.StatusBadRequest, code: "invalid_tenant", aadsts: 90002,
			message: fmt.Sprintf("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.", tenant)})
		return
	}
	base := baseURL(r)
	ep := base + "/" + segment
	var region any // Microsoft: null for the multi-tenant segments
	if issuerTenant == segment {
		region = "EU"
	}
	issuerHost := issuerBase
	if u, err := url.Parse(issuerBase); err == nil && u.Host != "" {
		issuerHost = u.Host
	}
	w.Header().Set("Access-Control-Allow-Origin", "*")
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "max-age=86400, private")
	writeDocument(w, map[string]any{
		"token_endpoint":                        ep + "/oauth2/v2.0/token",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"jwks_uri":                              ep + "/discovery/v2.0/keys",
		"response_modes_supported":              []string{"query", "fragment", "form_post"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"issuer":                                issuerBase + "/" + issuerTenant + "/v2.0",
		"request_uri_parameter_supported":       false,
		"userinfo_endpoint":                     base + "/oidc/userinfo",
		"authorization_endpoint":                ep + "/oauth2/v2.0/authorize",
		"device_authorization_endpoint":         ep + "/oauth2/v2.0/devicecode",
		"http_logout_supported":                 true,
		"frontchannel_logout_supported":         true,
		"end_session_endpoint":                  ep + "/oauth2/v2.0/logout",
		"claims_supported": []string{"sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
			"msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver",
			"at_hash", "c_hash", "email"},
		"kerberos_endpoint":     ep + "/kerberos",
		"tenant_region_scope":   region,
		"cloud_instance_name":   strings.TrimPrefix(issuerHost, "login."),
		"cloud_graph_host_name": "graph.windows.net",
		"msgraph_host":          r.Host,
		"rbac_url":              "https://pas.windows.net",
	})
}

// writeDocument writes v with the headers already set (no no-store: the
// discovery document is meant to be cached).
func writeDocument(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "devidp: encode: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// resolveTenant maps the tenant path segment to the endpoints' segment and
// the issuer's tenant part, as Microsoft does: common and organizations
// keep the {tenantid} template, consumers names the personal accounts'
// tenant, a tenant ID names itself, and a domain names the work tenant it
// belongs to (here: the only work tenant among the accounts). ok is false
// for a tenant Microsoft would not find.
func (s *Server) resolveTenant(tenant string) (segment, issuerTenant string, ok bool) {
	switch t := strings.ToLower(tenant); t {
	case "common", "organizations":
		return t, "{tenantid}", true
	case "consumers":
		return t, PersonalTenantID, true
	}
	if looksLikeGUID(tenant) {
		t := strings.ToLower(tenant)
		return t, t, true
	}
	found := ""
	for _, a := range s.accounts {
		if a.Personal() || strings.EqualFold(a.TenantID, found) {
			continue
		}
		if found != "" {
			return "", "", false // two work tenants: which one the domain names is unknown
		}
		found = strings.ToLower(a.TenantID)
	}
	return found, found, found != ""
}

// keys is GET /{tenant}/discovery/v2.0/keys. The stand-in signs nothing
// (the connector reads id_tokens straight from the token endpoint and does
// not check signatures), so its key set is empty.
func (s *Server) keys(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "max-age=86400, private")
	writeDocument(w, map[string]any{"keys": []any{}})
}
