package devidp

import (
	"fmt"
	"net/http"
	"strings"
)

// Client-credentials grant (an app-only token, no user), as the connector's
// diagnostics use it to prove the app registration and its credential.
// Microsoft's behaviour it follows (facts/microsoft-identity.md, "Checking
// the app's own credential"; learn.microsoft.com v2-oauth2-client-creds-grant-flow):
// the request goes to the app's home tenant; scope is one resource's
// "/.default"; the answer has token_type, expires_in, ext_expires_in and
// access_token, never a refresh_token or id_token; it succeeds even when
// the app has only delegated permissions.

// checkAppTenant refuses a client-credentials request to a tenant other
// than the app's home tenant: Microsoft finds no application there
// (AADSTS700016). common, organizations and consumers name no tenant:
// Microsoft's libraries refuse them for this grant and the service answers
// AADSTS50059 when it cannot infer one, which is what the stand-in always
// does, so a client sending them is caught here too.
func (s *Server) checkAppTenant(r *http.Request) *oauthError {
	tenant := r.PathValue("tenant")
	switch strings.ToLower(tenant) {
	case "common", "organizations", "consumers":
		return &oauthError{status: 400, code: "invalid_request", aadsts: 50059,
			message: "No tenant-identifying information found in either the request or implied by any provided credentials."}
	}
	if !strings.EqualFold(tenant, s.cfg.HomeTenantID) {
		return &oauthError{status: 400, code: "unauthorized_client", aadsts: 700016,
			message: fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.", r.PostForm.Get("client_id"), tenant)}
	}
	return nil
}

// clientCredentials is grant_type=client_credentials, after the client was
// authenticated. The token it issues is not registered for Graph /me (an
// app-only token has no user).
func (s *Server) clientCredentials(w http.ResponseWriter, r *http.Request) {
	scope := strings.TrimSpace(r.PostForm.Get("scope"))
	if scope == "" {
		s.writeOAuthError(w, r, oauthError{status: 400, code: "invalid_request", aadsts: 900144,
			message: "The request body must contain the following parameter: 'scope'."})
		return
	}
	if f := strings.Fields(scope); len(f) != 1 || !strings.HasSuffix(f[0], "/.default") {
		s.writeOAuthError(w, r, oauthError{status: 400, code: "invalid_scope", aadsts: 1002012,
			message: fmt.Sprintf("The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", scope)})
		return
	}
	s.mu.Lock()
	expiresIn := s.expiresInSeconds()
	s.mu.Unlock()
	s.log.Info().Str("event", "devidp_app_token_issued").Msg("client-credentials token issued")
	writeJSON(w, http.StatusOK, map[string]any{
		"token_type":     "Bearer",
		"expires_in":     expiresIn,
		"ext_expires_in": expiresIn,
		"access_token":   randomToken(64),
	})
}

// secretExpired reports whether secret is one of the app's client secrets
// whose end date has passed (ExpireClientSecrets): Microsoft then answers
// AADSTS7000222, not 7000215.
func (s *Server) secretExpired(secret string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return secret != "" && s.expired[secret]
}

// ExpireClientSecrets plants expired client secrets: every secret the app
// registration accepts now is treated as past its end date, as when the
// "Expires" chosen in the portal has come. Requests sending one get
// invalid_client with AADSTS7000222 until SetClientSecrets installs new
// ones.
func (s *Server) ExpireClientSecrets() {
	s.mu.Lock()
	if s.expired == nil {
		s.expired = map[string]bool{}
	}
	for _, sec := range s.secrets {
		if sec != "" {
			s.expired[sec] = true
		}
	}
	s.mu.Unlock()
	s.log.Info().Str("event", "devidp_secrets_expired").Msg("client secrets marked expired")
}

// adminExpireSecret is POST /devidp/expire-secret: the admin page's
// "Expire the client secret" button.
func (s *Server) adminExpireSecret(w http.ResponseWriter, r *http.Request) {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		http.Error(w, "devidp: cross-site request refused", http.StatusForbidden)
		return
	}
	s.ExpireClientSecrets()
	http.Redirect(w, r, "/devidp/", http.StatusSeeOther)
}

// RemoveFederatedCredential deletes the app registration's federated
// credential (as an admin removing it in the portal would): every client
// assertion is then refused with AADSTS70021, "No matching federated
// identity record found for presented assertion", however fresh.
// RestoreFederatedCredential undoes it.
func (s *Server) RemoveFederatedCredential() { s.setFederation(true) }

// RestoreFederatedCredential adds the federated credential back.
func (s *Server) RestoreFederatedCredential() { s.setFederation(false) }

func (s *Server) setFederation(removed bool) {
	s.mu.Lock()
	s.noFedCred = removed
	s.mu.Unlock()
}

func (s *Server) federationRemoved() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.noFedCred
}
