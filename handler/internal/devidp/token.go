package devidp

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// ErrAssertionExpired is what an AcceptAssertion func returns for an
// assertion past its lifetime (Microsoft: AADSTS700024).
var ErrAssertionExpired = errors.New("devidp: client assertion expired")

// AssertionType is RFC 7523's client_assertion_type for a JWT.
const AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// token is POST /{tenant}/oauth2/v2.0/token.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	formErr := r.ParseForm()
	grant := r.PostForm.Get("grant_type")

	s.mu.Lock()
	s.counts[grant]++
	latency := s.latency
	var injected *Response
	if len(s.failures) > 0 {
		injected = &s.failures[0]
		s.failures = s.failures[1:]
	}
	s.mu.Unlock()

	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if injected != nil {
		injected.write(w, s, r)
		return
	}
	if formErr != nil || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		s.writeOAuthError(w, r, oauthError{status: 400, code: "invalid_request", aadsts: 900144,
			message: "The request body must contain the following parameter: 'grant_type'."})
		return
	}
	if grant == "client_credentials" {
		// The app is looked up in the path's tenant before its credential.
		if e := s.checkAppTenant(r); e != nil {
			s.writeOAuthError(w, r, *e)
			return
		}
	}
	if e := s.authenticateClient(r); e != nil {
		s.writeOAuthError(w, r, *e)
		return
	}
	switch grant {
	case "client_credentials":
		s.clientCredentials(w, r)
	case "authorization_code":
		s.redeemCode(w, r)
	case "refresh_token":
		s.redeemRefresh(w, r)
	case "":
		s.writeOAuthError(w, r, oauthError{status: 400, code: "invalid_request", aadsts: 900144,
			message: "The request body must contain the following parameter: 'grant_type'."})
	default:
		s.writeOAuthError(w, r, oauthError{status: 400, code: "unsupported_grant_type", aadsts: 70003,
			message: fmt.Sprintf("The app requested an unsupported grant type '%s'.", grant)})
	}
}

// secretAccepted compares secret with every client secret the app
// registration currently has (Microsoft allows more than one, which is how
// a rotation overlaps).
func (s *Server) secretAccepted(secret string) bool {
	s.mu.Lock()
	accepted := s.secrets
	s.mu.Unlock()
	ok := 0
	for _, a := range accepted {
		if a != "" {
			ok |= subtle.ConstantTimeCompare([]byte(secret), []byte(a))
		}
	}
	return ok == 1
}

// authenticateClient checks client_id and the credential: client_secret
// (also accepted as HTTP Basic, as Microsoft does) or a client assertion.
func (s *Server) authenticateClient(r *http.Request) *oauthError {
	id, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		id, secret = u, p
	}
	if id != s.cfg.ClientID {
		return &oauthError{status: 400, code: "unauthorized_client", aadsts: 700016,
			message: fmt.Sprintf("Application with identifier '%s' was not found in the directory 'devidp'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.", id)}
	}
	assertion, assertionType := r.PostForm.Get("client_assertion"), r.PostForm.Get("client_assertion_type")
	switch {
	case secret == "" && assertion == "":
		return &oauthError{status: 401, code: "invalid_client", aadsts: 7000218,
			message: "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."}
	case secret != "" && assertion != "":
		return &oauthError{status: 400, code: "invalid_request", aadsts: 90014,
			message: "Send either client_secret or client_assertion, not both."}
	case secret != "":
		if s.secretExpired(secret) {
			return &oauthError{status: 401, code: "invalid_client", aadsts: 7000222,
				message: fmt.Sprintf("The provided client secret keys for app '%s' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.", s.cfg.ClientID)}
		}
		if !s.secretAccepted(secret) {
			return &oauthError{status: 401, code: "invalid_client", aadsts: 7000215,
				message: fmt.Sprintf("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", s.cfg.ClientID)}
		}
		return nil
	}
	if assertionType != AssertionType {
		return &oauthError{status: 400, code: "invalid_request", aadsts: 700023,
			message: fmt.Sprintf("Client assertion type must be '%s'.", AssertionType)}
	}
	if s.federationRemoved() {
		return &oauthError{status: 401, code: "invalid_client", aadsts: 70021,
			message: "No matching federated identity record found for presented assertion. Assertion Issuer: 'https://login.microsoftonline.com/" + s.cfg.HomeTenantID + "/v2.0'. Assertion Subject: '" + s.cfg.ManagedIdentityClientID + "'. Assertion Audience: '" + AssertionAudience + "'."}
	}
	accept := s.cfg.AcceptAssertion
	if accept == nil {
		accept = s.acceptIssuedAssertion
	}
	if err := accept(assertion); err != nil {
		if errors.Is(err, ErrAssertionExpired) {
			return &oauthError{status: 401, code: "invalid_client", aadsts: 700024,
				message: "Client assertion is not within its valid time range."}
		}
		return &oauthError{status: 401, code: "invalid_client", aadsts: 700213,
			message: "No matching federated identity record found for presented assertion subject. Check your federated identity credential Subject, Audience and Issuer against the presented assertion."}
	}
	return nil
}

// acceptIssuedAssertion accepts only this server's managed identity tokens
// for AssertionAudience that are current.
func (s *Server) acceptIssuedAssertion(assertion string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.miTokens[assertion]
	switch {
	case !ok:
		return errors.New("devidp: not a managed identity token of this server")
	case m.resource != AssertionAudience:
		return fmt.Errorf("devidp: managed identity token is for %q, not %q", m.resource, AssertionAudience)
	case !s.now().Before(m.expires) || m.epoch < s.miEpoch:
		return ErrAssertionExpired
	}
	return nil
}

// redeemCode is grant_type=authorization_code.
func (s *Server) redeemCode(w http.ResponseWriter, r *http.Request) {
	code, verifier := r.PostForm.Get("code"), r.PostForm.Get("code_verifier")
	if code == "" {
		s.writeOAuthError(w, r, oauthError{status: 400, code: "invalid_request", aadsts: 900144,
			message: "The request body must contain the following parameter: 'code'."})
		return
	}
	now := s.now()
	s.mu.Lock()
	c, ok := s.codes[code]
	var fail *oauthError
	switch {
	case !ok:
		fail = &oauthError{status: 400, code: "invalid_grant", aadsts: 9002313, message: "Invalid request. Request is malformed or invalid."}
	case c.used:
		fail = &oauthError{status: 400, code: "invalid_grant", aadsts: 54005,
			message: "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token."}
	case !now.Before(c.expires):
		fail = &oauthError{status: 400, code: "invalid_grant", aadsts: 70008,
			message: "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource."}
	case r.PostForm.Get("redirect_uri") != c.redirectURI:
		fail = &oauthError{status: 400, code: "invalid_request", aadsts: 500112,
			message: "The reply address does not match the reply address provided when requesting Authorization code."}
	case !pkceMatches(verifier, c.challenge):
		fail = &oauthError{status: 400, code: "invalid_grant", aadsts: 501481,
			message: "The Code_Verifier does not match the code_challenge supplied in the authorization request."}
	}
	if fail != nil {
		s.mu.Unlock()
		s.writeOAuthError(w, r, *fail)
		return
	}
	// Single use: marked under the same lock that checked it, so of two
	// concurrent redemptions exactly one succeeds.
	c.used = true
	g := &grantRecord{oid: c.oid, clientID: c.clientID, scopes: c.scopes}
	grantID := randomToken(12)
	s.grants[grantID] = g
	body := s.issueLocked(r, grantID, g, c.scopes.resource, c.scopes.openid, c.nonce, now)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, body)
}

// pkceMatches checks RFC 7636 S256: BASE64URL(SHA256(verifier)) ==
// challenge.
func pkceMatches(verifier, challenge string) bool {
	if verifier == "" {
		return false
	}
	sum := sha256.Sum256([]byte(verifier))
	return subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(challenge)) == 1
}

// redeemRefresh is grant_type=refresh_token. Every use rotates: a new
// refresh token is issued and the presented one stays valid (Microsoft does
// not revoke it), unless the account was revoked or it sat unused for 90
// days.
func (s *Server) redeemRefresh(w http.ResponseWriter, r *http.Request) {
	rt, scope := r.PostForm.Get("refresh_token"), r.PostForm.Get("scope")
	if rt == "" {
		s.writeOAuthError(w, r, oauthError{status: 400, code: "invalid_request", aadsts: 900144,
			message: "The request body must contain the following parameter: 'refresh_token'."})
		return
	}
	if strings.TrimSpace(scope) == "" {
		// What Microsoft answers a refresh without scope.
		s.writeOAuthError(w, r, oauthError{status: 400, code: "invalid_request", aadsts: 90009,
			message: fmt.Sprintf("Application '%s'(devidp) is requesting a token for itself. This scenario is supported only if resource is specified using the GUID based App Identifier.", s.cfg.ClientID)})
		return
	}
	requested := parseScopes(scope)
	now := s.now()
	s.mu.Lock()
	rec, ok := s.refresh[rt]
	var g *grantRecord
	var fail *oauthError
	if ok {
		g = s.grants[rec.grant]
	}
	switch {
	case !ok || g == nil:
		fail = &oauthError{status: 400, code: "invalid_grant", aadsts: 9002313, message: "Invalid request. Request is malformed or invalid."}
	case g.clientID != s.cfg.ClientID:
		fail = &oauthError{status: 400, code: "invalid_grant", aadsts: 70000, message: "Provided grant is invalid or malformed."}
	case rec.seq <= s.revoked[g.oid]:
		fail = (&oauthError{status: 400, code: "invalid_grant", aadsts: 70008,
			message: "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource."})
	case now.Sub(rec.issuedAt) >= refreshInactivity:
		fail = &oauthError{status: 400, code: "invalid_grant", aadsts: 700082, suberror: "bad_token",
			message: fmt.Sprintf("The refresh token has expired due to inactivity. The token was issued on %s and was inactive for 90.00:00:00.", rec.issuedAt.UTC().Format(time.RFC3339))}
	case !subset(requested.resource, g.scopes.resource):
		fail = &oauthError{status: 400, code: "invalid_grant", aadsts: 65001, suberror: "consent_required",
			message: fmt.Sprintf("The user or administrator has not consented to use the application with ID '%s' named 'devidp'. Send an interactive authorization request for this user and resource.", s.cfg.ClientID)}
	}
	if fail != nil {
		s.mu.Unlock()
		s.writeOAuthError(w, r, *fail)
		return
	}
	resource := requested.resource
	if len(resource) == 0 {
		resource = g.scopes.resource
	}
	body := s.issueLocked(r, rec.grant, g, resource, requested.openid && g.scopes.openid, "", now)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, body)
}

// subset: every scope of a is in b (case-insensitive).
func subset(a, b []string) bool {
	have := map[string]bool{}
	for _, x := range b {
		have[strings.ToLower(x)] = true
	}
	for _, x := range a {
		if !have[strings.ToLower(x)] {
			return false
		}
	}
	return true
}

// issueLocked mints the token response. Caller holds s.mu.
func (s *Server) issueLocked(r *http.Request, grantID string, g *grantRecord, resource []string, withIDToken bool, nonce string, now time.Time) map[string]any {
	s.issued++
	if s.issued%pruneEveryIssuance == 0 {
		s.prune(now)
	}
	at := randomToken(64)
	s.access[at] = &accessRecord{oid: g.oid, expires: now.Add(s.expiresIn)}
	body := map[string]any{
		"token_type":     "Bearer",
		"scope":          g.scopes.echo(resource),
		"expires_in":     int(s.expiresIn / time.Second),
		"ext_expires_in": int(s.expiresIn / time.Second),
		"access_token":   at,
	}
	if g.scopes.offline {
		rt := randomToken(96)
		s.seq++
		s.refresh[rt] = &refreshRecord{grant: grantID, seq: s.seq, issuedAt: now}
		g.latest = rt
		body["refresh_token"] = rt
	}
	if withIDToken {
		acct, _ := s.account(g.oid)
		body["id_token"] = s.idToken(r, acct, g.scopes, nonce, now)
	}
	s.log.Info().Str("event", "devidp_tokens_issued").Str("oid", g.oid).Bool("refresh_token", g.scopes.offline).Msg("tokens issued")
	return body
}

// idToken is an unsigned id_token in JWS compact form. Caller holds s.mu. Its signature part
// is a placeholder: the connector reads id_tokens straight from the token
// endpoint over TLS and does not check signatures.
func (s *Server) idToken(r *http.Request, a Account, scopes grantScopes, nonce string, now time.Time) string {
	header := map[string]any{"typ": "JWT", "alg": "RS256", "kid": "devidp-unsigned"}
	sub := sha256.Sum256([]byte(a.OID + "|" + s.cfg.ClientID))
	claims := map[string]any{
		"aud": s.cfg.ClientID,
		"iss": s.tokenIssuerLocked(r) + "/" + a.TenantID + "/v2.0",
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(idTokenLifetime).Unix(),
		"oid": a.OID,
		"tid": a.TenantID,
		"sub": base64.RawURLEncoding.EncodeToString(sub[:]),
		"ver": "2.0",
	}
	if scopes.profile {
		claims["name"] = a.DisplayName
		claims["preferred_username"] = a.UserPrincipalName
	}
	if nonce != "" {
		claims["nonce"] = nonce
	}
	return jwt(header, claims, []byte("devidp-not-signed"))
}

func jwt(header, claims map[string]any, sig []byte) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding
	return enc.EncodeToString(h) + "." + enc.EncodeToString(c) + "." + enc.EncodeToString(sig)
}
