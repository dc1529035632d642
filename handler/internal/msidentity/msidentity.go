// Package msidentity is the connector's adapter to the Microsoft identity
// platform and Microsoft Graph: the authorize URL (PKCE S256), the code
// exchange, the refresh and the client-credentials check (one request,
// answer and error path for every grant: x/oauth2 only builds the authorize
// URL, its TokenSource sends no scope and hides rotated tokens), the
// id_token's audience and issuer checks (the issuer from the authority's
// OpenID Connect discovery document, cached),
// Graph /v1.0/me, Microsoft's error JSON parsed into a classified *Error,
// the client credential (secret or managed-identity assertion, renewed once
// on invalid_client) and this instance's refresh pause after an HTTP 429.
// AADSTS50196 pauses one connection: that pause is the caller's to keep
// (package tokens stores it in the connection's row).
//
// It owns no storage and knows nothing of the HTTP API or of connections
// beyond the domain types in package connection.
package msidentity

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// Defaults for the public cloud (contract: Configuration).
const (
	DefaultAuthorityHost = "https://login.microsoftonline.com"
	DefaultGraphURL      = "https://graph.microsoft.com"
	DefaultTenant        = "common"
)

// defaultThrottlePause is the pause after a 429 or an AADSTS50196 that came
// without a Retry-After (contract "Throttling": default 60 s): Microsoft's
// loop detection counts identical requests over about a minute.
const defaultThrottlePause = time.Minute

// Operation names, used in errors and logs.
const (
	opExchange = "exchange"
	opRefresh  = "refresh"
	opMe       = "me"
)

// Config configures a Client. ClientID, RedirectURL, Scopes, Credential
// and Now are required; the rest have defaults.
type Config struct {
	// AuthorityHost is the identity platform's base URL, without tenant
	// (MICROSOFT_AUTHORITY_HOST). Default DefaultAuthorityHost.
	AuthorityHost string
	// Tenant is common, organizations, consumers or a tenant ID or domain.
	// Default DefaultTenant.
	Tenant string
	// ClientID is the app registration's application (client) ID.
	ClientID string
	// RedirectURL is the registered redirect URI, sent verbatim.
	RedirectURL string
	// GraphURL is Microsoft Graph's base URL. Default DefaultGraphURL.
	GraphURL string
	// Scopes are the delegated scopes (MICROSOFT_SCOPES). The authorize
	// request adds openid and profile; the refresh sends exactly these.
	Scopes []string
	// HTTPClient carries every request. It should have timeouts; nil
	// means a client with a 30-second timeout (never http.DefaultClient).
	HTTPClient *http.Client
	// Now is the clock, required (as in go-oidc: no hidden time.Now):
	// token expiry, Retry-After dates, the throttling pause and the
	// discovery cache use it.
	Now func() time.Time
	// Credential authenticates the client at the token endpoint.
	Credential ClientCredential
	// Logger receives the `throttled` event and credential renewals.
	Logger zerolog.Logger
}

// Tokens is what the token endpoint gave: connection.Grant, so a *Client is
// a connection.Refresher as is. RefreshToken is empty when Microsoft sent
// none (the caller keeps the refresh token it has). Account (ID = oid,
// TenantID = tid) is set by Exchange from the id_token; Refresh leaves it
// zero.
type Tokens = connection.Grant

// Client talks to one app registration's token endpoint and Graph. It is
// safe for concurrent use; make one per process so the throttling pause
// covers every caller.
type Client struct {
	oauth        *oauth2.Config // the authorize URL only
	authority    string         // for the home tenant's token endpoint (CheckCredential)
	clientID     string
	redirectURL  string
	tenant       string
	tokenURL     string
	graphURL     string
	refreshScope string
	hc           *http.Client
	now          func() time.Time
	cred         ClientCredential
	log          zerolog.Logger
	disc         *discovery

	// throttle pauses this Client's refreshes (never its code exchanges)
	// after an HTTP 429.
	throttleMu    sync.Mutex
	throttleUntil time.Time

	// renewLock serialises credential renewals; credGen counts them, so
	// requests that failed with the same credential renew it only once.
	renewLock chan struct{}
	credGen   atomic.Uint64
}

var _ connection.Refresher = (*Client)(nil)

// New checks cfg and builds a Client. It makes no network call.
func New(cfg Config) (*Client, error) {
	if cfg.AuthorityHost == "" {
		cfg.AuthorityHost = DefaultAuthorityHost
	}
	if cfg.Tenant == "" {
		cfg.Tenant = DefaultTenant
	}
	if cfg.GraphURL == "" {
		cfg.GraphURL = DefaultGraphURL
	}
	authority := strings.TrimRight(cfg.AuthorityHost, "/")
	graph := strings.TrimRight(cfg.GraphURL, "/")
	for name, v := range map[string]string{"authority host": authority, "graph url": graph, "redirect url": cfg.RedirectURL} {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("msidentity: %s %q is not an absolute http(s) URL", name, v)
		}
	}
	switch {
	case cfg.ClientID == "":
		return nil, errors.New("msidentity: client id is required")
	case strings.ContainsAny(cfg.Tenant, "/?#") || strings.TrimSpace(cfg.Tenant) != cfg.Tenant:
		return nil, fmt.Errorf("msidentity: tenant %q is not a path segment", cfg.Tenant)
	case cfg.Credential == nil:
		return nil, errors.New("msidentity: a client credential is required")
	case cfg.Now == nil:
		return nil, errors.New("msidentity: a clock (Config.Now) is required")
	}
	scopes := dedupeScopes(cfg.Scopes)
	if len(scopes) == 0 {
		// Without scopes the refresh fails with AADSTS90009 and the grant
		// carries no delegated access at all.
		return nil, errors.New("msidentity: at least one scope is required")
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	base := authority + "/" + url.PathEscape(cfg.Tenant) + "/oauth2/v2.0"
	c := &Client{
		// x/oauth2 builds the authorize URL and its PKCE challenge only:
		// every grant goes through tokenRequest, so limits, error classes,
		// throttling and the credential's renewal are the same for all.
		oauth: &oauth2.Config{
			ClientID:    cfg.ClientID,
			Endpoint:    oauth2.Endpoint{AuthURL: base + "/authorize"},
			RedirectURL: cfg.RedirectURL,
			Scopes:      dedupeScopes(append(append([]string(nil), scopes...), "openid", "profile")),
		},
		authority:    authority,
		clientID:     cfg.ClientID,
		redirectURL:  cfg.RedirectURL,
		tenant:       cfg.Tenant,
		tokenURL:     base + "/token",
		graphURL:     graph,
		refreshScope: strings.Join(scopes, " "),
		hc:           hc,
		now:          cfg.Now,
		cred:         cfg.Credential,
		log:          cfg.Logger,
		renewLock:    make(chan struct{}, 1),
		disc:         newDiscovery(authority, cfg.Tenant, hc, cfg.Now),
	}
	return c, nil
}

// dedupeScopes drops empty and repeated scopes (scopes are case-insensitive
// at Microsoft), keeping the first spelling and the order.
func dedupeScopes(in []string) []string {
	seen := make(map[string]bool, len(in))
	var out []string
	for _, s := range in {
		for _, f := range strings.Fields(s) {
			k := strings.ToLower(f)
			if seen[k] {
				continue
			}
			seen[k] = true
			out = append(out, f)
		}
	}
	return out
}

// Close ends the Client's background work (a discovery fetch in flight,
// which outlives the exchange that started it) and waits for it, at most
// until ctx is done. Exchanges after Close that need the document fail.
func (c *Client) Close(ctx context.Context) error { return c.disc.close(ctx) }
