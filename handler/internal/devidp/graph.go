package devidp

import (
	"crypto/subtle"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// me is Graph's GET /v1.0/me for an access token this server issued.
func (s *Server) me(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	scheme, token, _ := strings.Cut(auth, " ")
	if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		s.graphError(w, r, http.StatusUnauthorized, "InvalidAuthenticationToken", "Access token is empty.")
		return
	}
	s.mu.Lock()
	rec, ok := s.access[strings.TrimSpace(token)]
	now := s.now()
	s.mu.Unlock()
	switch {
	case !ok:
		s.graphError(w, r, http.StatusUnauthorized, "InvalidAuthenticationToken", "IDX14100: JWT is not well formed, there are no dots (.).")
		return
	case !now.Before(rec.expires):
		s.graphError(w, r, http.StatusUnauthorized, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.")
		return
	}
	a, ok := s.account(rec.oid)
	if !ok {
		s.graphError(w, r, http.StatusNotFound, "Request_ResourceNotFound", "Resource does not exist or one of its queried reference-property objects are not present.")
		return
	}
	var mail any
	if a.Mail != "" {
		mail = a.Mail
	}
	given, surname, _ := strings.Cut(a.DisplayName, " ")
	reqID := newGUID()
	w.Header().Set("request-id", reqID)
	w.Header().Set("client-request-id", reqID)
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.context":    "https://graph.microsoft.com/v1.0/$metadata#users/$entity",
		"businessPhones":    []string{},
		"displayName":       a.DisplayName,
		"givenName":         given,
		"surname":           surname,
		"jobTitle":          nil,
		"mail":              mail,
		"mobilePhone":       nil,
		"officeLocation":    nil,
		"preferredLanguage": nil,
		"userPrincipalName": a.UserPrincipalName,
		"id":                a.graphID(),
	})
}

// ManagedIdentityPath is the App Service managed identity endpoint's path
// on this server: set IDENTITY_ENDPOINT to the server's URL plus this, and
// IDENTITY_HEADER to IdentityHeader(), and azidentity's
// ManagedIdentityCredential fetches its tokens here.
const ManagedIdentityPath = "/devidp/msi/token"

// managedIdentity speaks the App Service managed identity protocol
// (api-version 2019-08-01): GET ?api-version&resource[&client_id] with
// X-IDENTITY-HEADER, answering access_token, expires_on (Unix seconds as a
// string), resource, token_type and client_id.
func (s *Server) managedIdentity(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	hdr := r.Header.Get("X-IDENTITY-HEADER")
	switch {
	case subtle.ConstantTimeCompare([]byte(hdr), []byte(s.identity)) != 1:
		writeJSON(w, http.StatusUnauthorized, map[string]any{"statusCode": 401, "message": "X-IDENTITY-HEADER is missing or wrong."})
		return
	case q.Get("api-version") != "2019-08-01":
		writeJSON(w, http.StatusBadRequest, map[string]any{"statusCode": 400, "message": "api-version must be 2019-08-01."})
		return
	case q.Get("resource") == "":
		writeJSON(w, http.StatusBadRequest, map[string]any{"statusCode": 400, "message": "resource is required."})
		return
	case s.cfg.ManagedIdentityClientID != "" && q.Get("client_id") != "" && q.Get("client_id") != s.cfg.ManagedIdentityClientID:
		writeJSON(w, http.StatusBadRequest, map[string]any{"statusCode": 400, "message": "No managed identity with this client_id is assigned to this resource."})
		return
	}
	resource := strings.TrimSuffix(q.Get("resource"), "/.default")
	now := s.now()
	expires := now.Add(s.cfg.AssertionLifetime)
	principal := s.cfg.ManagedIdentityClientID
	if principal == "" {
		principal = "system-assigned"
	}
	tok := jwt(map[string]any{"typ": "JWT", "alg": "RS256", "kid": "devidp-unsigned"}, map[string]any{
		"aud": resource, "iss": "https://devidp.invalid/managed-identity", "sub": principal,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": expires.Unix(), "jti": randomToken(16),
	}, []byte("devidp-not-signed"))
	s.mu.Lock()
	s.miCount++
	s.miTokens[tok] = &miRecord{resource: resource, expires: expires, epoch: s.miEpoch}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": tok,
		"expires_on":   strconv.FormatInt(expires.Unix(), 10),
		"resource":     resource,
		"token_type":   "Bearer",
		"client_id":    s.cfg.ManagedIdentityClientID,
	})
}

// IdentityHeader is the X-IDENTITY-HEADER the managed identity endpoint
// requires (for IDENTITY_HEADER).
func (s *Server) IdentityHeader() string { return s.identity }

// expiresInSeconds is for the status page.
func (s *Server) expiresInSeconds() int { return int(s.expiresIn / time.Second) }
