package devidp

import (
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"
)

// Accounts returns the test accounts.
func (s *Server) Accounts() []Account { return append([]Account(nil), s.accounts...) }

// RevokeAccount revokes every refresh token issued to the account so far,
// as an admin's "revoke sessions" does: refreshing one then fails with
// invalid_grant (AADSTS70008). Access tokens already issued stay valid
// until they expire, as Microsoft's do, and the user can sign in again.
func (s *Server) RevokeAccount(oid string) error {
	if _, ok := s.account(oid); !ok {
		return fmt.Errorf("devidp: revoke: no account %q", oid)
	}
	s.mu.Lock()
	s.revoked[oid] = s.seq
	s.mu.Unlock()
	s.log.Info().Str("event", "devidp_revoked").Str("oid", oid).Msg("account's refresh tokens revoked")
	return nil
}

// SetClientSecrets replaces the client secrets the app registration
// accepts, as adding or deleting one in the portal does (none: secretless).
func (s *Server) SetClientSecrets(secrets ...string) {
	s.mu.Lock()
	s.secrets = append([]string(nil), secrets...)
	s.expired = nil
	s.mu.Unlock()
}

// SetLatency delays every later token request by d (0 turns it off).
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	s.latency = d
	s.mu.Unlock()
}

// SetExpiresIn changes the lifetime of access tokens issued from now on.
func (s *Server) SetExpiresIn(d time.Duration) {
	if d <= 0 {
		d = defaultExpiresIn
	}
	s.mu.Lock()
	s.expiresIn = d
	s.mu.Unlock()
}

// FailNext makes the next n token requests (any grant type, counted as
// usual) answer resp instead, after any latency.
func (s *Server) FailNext(n int, resp Response) {
	s.mu.Lock()
	for range n {
		s.failures = append(s.failures, resp)
	}
	s.mu.Unlock()
}

// SetIssuerBase makes the discovery document announce, and id_tokens issued
// from now on carry, an issuer under base ("" = this server's own address;
// see Config.IssuerBase).
func (s *Server) SetIssuerBase(base string) {
	s.mu.Lock()
	s.issuerBase = strings.TrimRight(base, "/")
	s.mu.Unlock()
}

// ForgeIssuer makes id_tokens issued from now on carry iss
// {base}/{tid}/v2.0 whatever the discovery document announces, as a token
// endpoint answering in Microsoft's place would ("" ends it).
func (s *Server) ForgeIssuer(base string) {
	s.mu.Lock()
	s.forgedIssuer = strings.TrimRight(base, "/")
	s.mu.Unlock()
}

// FailDiscovery makes the discovery document answer resp until it is
// called with nil (an unreachable or broken authority).
func (s *Server) FailDiscovery(resp *Response) {
	s.mu.Lock()
	s.discoveryFailure = resp
	s.mu.Unlock()
}

// DiscoveryRequests counts requests for the discovery document.
func (s *Server) DiscoveryRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.discoveries
}

// TokenRequests counts the token requests received with grant_type
// ("authorization_code", "refresh_token"), injected failures included.
func (s *Server) TokenRequests(grantType string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[grantType]
}

// ManagedIdentityRequests counts tokens served by the managed identity
// endpoint.
func (s *Server) ManagedIdentityRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.miCount
}

// InvalidateAssertions makes every managed identity token issued so far
// unacceptable as a client assertion (as if it had expired): the next
// token request that presents one gets invalid_client, and a fresh token
// from the managed identity endpoint works again.
func (s *Server) InvalidateAssertions() {
	s.mu.Lock()
	s.miEpoch++
	s.mu.Unlock()
}

// LatestRefreshToken is the newest refresh token issued to the account,
// across its sign-ins.
func (s *Server) LatestRefreshToken(oid string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best string
	var bestSeq uint64
	for _, g := range s.grants {
		if g.oid != oid || g.latest == "" {
			continue
		}
		if rec := s.refresh[g.latest]; rec != nil && rec.seq > bestSeq {
			best, bestSeq = g.latest, rec.seq
		}
	}
	return best, best != ""
}

// IsLatestRefreshToken reports whether token is the newest refresh token of
// its sign-in (grant): what a crash test asks of the token a store kept.
func (s *Server) IsLatestRefreshToken(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.refresh[token]
	if !ok {
		return false
	}
	g := s.grants[rec.grant]
	return g != nil && g.latest == token
}

// IsRefreshTokenAccepted reports whether a refresh with token would
// succeed now (known, not revoked, not inactive for 90 days).
func (s *Server) IsRefreshTokenAccepted(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.refresh[token]
	if !ok {
		return false
	}
	g := s.grants[rec.grant]
	return g != nil && rec.seq > s.revoked[g.oid] && s.now().Sub(rec.issuedAt) < refreshInactivity
}

// Status is the JSON of GET /devidp/status.
type Status struct {
	Accounts                []AccountStatus `json:"accounts"`
	TokenRequests           map[string]int  `json:"token_requests"`
	ManagedIdentityRequests int             `json:"managed_identity_requests"`
	LatencyMS               int64           `json:"latency_ms"`
	PendingFailures         int             `json:"pending_failures"`
	ExpiresIn               int             `json:"expires_in"`
}

// AccountStatus is one account in Status.
type AccountStatus struct {
	OID                   string `json:"oid"`
	TenantID              string `json:"tid"`
	DisplayName           string `json:"display_name"`
	UserPrincipalName     string `json:"user_principal_name"`
	Personal              bool   `json:"personal"`
	Revoked               bool   `json:"revoked"`
	RefreshTokensIssued   int    `json:"refresh_tokens_issued"`
	AcceptedRefreshTokens int    `json:"accepted_refresh_tokens"`
}

// Status reports the accounts and counters (never a token).
func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{
		TokenRequests:           map[string]int{},
		ManagedIdentityRequests: s.miCount,
		LatencyMS:               s.latency.Milliseconds(),
		PendingFailures:         len(s.failures),
		ExpiresIn:               s.expiresInSeconds(),
	}
	for k, v := range s.counts {
		st.TokenRequests[k] = v
	}
	now := s.now()
	for _, a := range s.accounts {
		as := AccountStatus{OID: a.OID, TenantID: a.TenantID, DisplayName: a.DisplayName, UserPrincipalName: a.UserPrincipalName, Personal: a.Personal()}
		for _, rec := range s.refresh {
			g := s.grants[rec.grant]
			if g == nil || g.oid != a.OID {
				continue
			}
			as.RefreshTokensIssued++
			if rec.seq > s.revoked[a.OID] && now.Sub(rec.issuedAt) < refreshInactivity {
				as.AcceptedRefreshTokens++
			}
		}
		_, revoked := s.revoked[a.OID]
		as.Revoked = revoked && as.AcceptedRefreshTokens == 0
		st.Accounts = append(st.Accounts, as)
	}
	return st
}

// adminStatus is GET /devidp/status.
func (s *Server) adminStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Status())
}

// adminPage is GET /devidp/: the accounts with a Revoke button each.
func (s *Server) adminPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("X-Frame-Options", "DENY")
	if err := adminTemplate.Execute(w, s.Status()); err != nil {
		s.log.Error().Err(err).Msg("devidp: render admin page")
	}
}

// adminRevoke is POST /devidp/revoke (form: oid).
func (s *Server) adminRevoke(w http.ResponseWriter, r *http.Request) {
	// The admin page posts from this origin; refuse other sites' forms so
	// a page in the demo browser cannot revoke accounts behind its back.
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		http.Error(w, "devidp: cross-site request refused", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "devidp: bad form", http.StatusBadRequest)
		return
	}
	if err := s.RevokeAccount(r.PostForm.Get("oid")); err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	http.Redirect(w, r, "/devidp/", http.StatusSeeOther)
}

var adminTemplate = template.Must(template.Must(pages.Clone()).New("admin").Parse(`{{template "head" "devidp admin"}}
<div class="banner">MEGDocs local Microsoft stand-in (devidp)</div>
<h1>Test accounts</h1>
<table><tr><th>Account</th><th>Refresh tokens</th><th></th></tr>
{{range .Accounts}}<tr><td><div class="name">{{.DisplayName}}</div><div class="upn">{{.UserPrincipalName}}</div>
<div class="kind"><code>oid {{.OID}}</code><br><code>tid {{.TenantID}}</code></div></td>
<td>{{.AcceptedRefreshTokens}} accepted / {{.RefreshTokensIssued}} issued{{if .Revoked}}<br><span class="err">revoked</span>{{end}}</td>
<td><form method="post" action="/devidp/revoke"><input type="hidden" name="oid" value="{{.OID}}"><button type="submit">Revoke</button></form></td></tr>
{{end}}</table>
<form method="post" action="/devidp/expire-secret"><button type="submit">Expire the client secret</button>
<span class="upn">(as if its end date had passed: token requests then fail with AADSTS7000222; GET /api/diagnostics shows it)</span></form>
<p class="upn">Token requests: {{range $k, $v := .TokenRequests}}{{if $k}}{{$k}}{{else}}(none){{end}}={{$v}} {{end}}·
managed identity tokens: {{.ManagedIdentityRequests}} · latency {{.LatencyMS}} ms · pending injected failures {{.PendingFailures}} ·
access tokens live {{.ExpiresIn}} s · <a href="/devidp/status">JSON</a></p>
</main></body></html>`))
