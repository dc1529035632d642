// Package msidentity is the connector's adapter to the Microsoft identity
// platform and Microsoft Graph: the authorize URL (PKCE S256), the code
// exchange, the refresh (made by hand: x/oauth2's TokenSource sends no scope
// and hides rotated tokens), the id_token's audience and issuer checks (the
// issuer from the authority's OpenID Connect discovery document, cached),
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
	"io"
	"net/http"
	"net/url"
	"regexp"
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

// Config configures a Client. ClientID, RedirectURL, Scopes and Credential
// are required; the rest have defaults.
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
	// Now is the clock (time.Now when nil): token expiry, Retry-After
	// dates and the throttling pause use it.
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

// Profile is the signed-in user's Graph /me.
type Profile struct {
	// ID is Graph's user id: the oid for work and school accounts, a
	// 16-hex-digit CID for personal accounts. Identify accounts by the
	// id_token's oid and tid instead.
	ID                string `json:"id"`
	DisplayName       string `json:"displayName"`
	Mail              string `json:"mail"`
	UserPrincipalName string `json:"userPrincipalName"`
}

// Email is mail, or userPrincipalName when the account has no mailbox
// address (personal accounts often have none).
func (p Profile) Email() string {
	if p.Mail != "" {
		return p.Mail
	}
	return p.UserPrincipalName
}

// Client talks to one app registration's token endpoint and Graph. It is
// safe for concurrent use; make one per process so the throttling pause
// covers every caller.
type Client struct {
	oauth        *oauth2.Config
	authority    string // for the home tenant's token endpoint (CheckCredential)
	clientID     string
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
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	base := authority + "/" + url.PathEscape(cfg.Tenant) + "/oauth2/v2.0"
	c := &Client{
		oauth: &oauth2.Config{
			ClientID: cfg.ClientID,
			// ClientSecret stays empty: the credential's parameters are
			// added per request (SetAuthURLParam), so a rotated secret or
			// a fresh assertion is used at once and assertion mode sends
			// no client_secret at all.
			Endpoint: oauth2.Endpoint{
				AuthURL:  base + "/authorize",
				TokenURL: base + "/token",
				// Explicit: auto-detection silently repeats a failed
				// request (same code, same refresh token) with the other
				// style.
				AuthStyle: oauth2.AuthStyleInParams,
			},
			RedirectURL: cfg.RedirectURL,
			Scopes:      dedupeScopes(append(append([]string(nil), scopes...), "openid", "profile")),
		},
		authority:    authority,
		clientID:     cfg.ClientID,
		tenant:       cfg.Tenant,
		tokenURL:     base + "/token",
		graphURL:     graph,
		refreshScope: strings.Join(scopes, " "),
		hc:           hc,
		now:          now,
		cred:         cfg.Credential,
		log:          cfg.Logger,
		renewLock:    make(chan struct{}, 1),
		disc:         newDiscovery(authority, cfg.Tenant, hc, now),
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

// AuthCodeURL is where to send the browser: the authorize endpoint with
// client_id, response_type=code, redirect_uri, response_mode=query, scope
// (the configured scopes plus openid profile), state, the S256 code
// challenge of verifier, and login_hint when given, else
// prompt=select_account so the user picks the account deliberately.
func (c *Client) AuthCodeURL(state, verifier, loginHint string) string {
	opts := []oauth2.AuthCodeOption{
		oauth2.S256ChallengeOption(verifier),
		oauth2.SetAuthURLParam("response_mode", "query"),
	}
	if loginHint != "" {
		opts = append(opts, oauth2.SetAuthURLParam("login_hint", loginHint))
	} else {
		opts = append(opts, oauth2.SetAuthURLParam("prompt", "select_account"))
	}
	return c.oauth.AuthCodeURL(state, opts...)
}

// Exchange redeems an authorization code with its PKCE verifier and
// identifies the account from the id_token (aud must be the client ID, iss
// the issuer the authority's discovery document announces for the token's
// tenant). The document is read first (cached for an hour): when it cannot
// be, the code is not sent and the error is a *DiscoveryError. On
// invalid_client the credential is renewed and the request sent once more.
func (c *Client) Exchange(ctx context.Context, code, verifier string) (Tokens, error) {
	// Before the code is spent: an exchange whose id_token cannot be
	// checked is worthless, and the unspent code could still be redeemed.
	issuer, err := c.disc.issuerTemplate(ctx)
	if err != nil {
		return Tokens{}, err
	}
	return c.tokenRequest(ctx, opExchange, func(ctx context.Context, cred url.Values) (Tokens, error) {
		opts := []oauth2.AuthCodeOption{oauth2.VerifierOption(verifier)}
		for k, vs := range cred {
			for _, v := range vs {
				opts = append(opts, oauth2.SetAuthURLParam(k, v))
			}
		}
		tok, err := c.oauth.Exchange(context.WithValue(ctx, oauth2.HTTPClient, c.hc), code, opts...)
		if err != nil {
			return Tokens{}, c.exchangeError(err)
		}
		tr := tokenResponse{
			AccessToken:  tok.AccessToken,
			TokenType:    tok.TokenType,
			RefreshToken: tok.RefreshToken,
			ExpiresIn:    seconds(tok.ExpiresIn),
		}
		tr.Scope, _ = tok.Extra("scope").(string)
		tr.IDToken, _ = tok.Extra("id_token").(string)
		if err := checkTokenResponse(tr); err != nil {
			return Tokens{}, &Error{Op: opExchange, HTTPStatus: http.StatusOK, Code: CodeInvalidResponse, Err: err}
		}
		acct, err := c.account(tr.IDToken, issuer)
		if err != nil {
			return Tokens{}, err
		}
		t := c.grant(tr)
		t.Account = acct
		return t, nil
	})
}

// exchangeError turns x/oauth2's errors into *Error. RetrieveError lacks
// error_codes, trace_id and suberror, so its Body is parsed here.
func (c *Client) exchangeError(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status, h := 0, http.Header{}
		if re.Response != nil {
			status, h = re.Response.StatusCode, re.Response.Header
		}
		if status >= 200 && status < 300 {
			// A 2xx carrying `error`: it is still Microsoft's error.
			e := responseError(opExchange, status, h, re.Body, c.now())
			if e.Code == CodeInvalidResponse {
				e.Code = re.ErrorCode
			}
			return e
		}
		return responseError(opExchange, status, h, re.Body, c.now())
	}
	var ue *url.Error
	if errors.As(err, &ue) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &Error{Op: opExchange, Code: CodeNetworkError, Err: err}
	}
	// x/oauth2 read a 2xx it could not parse (malformed or truncated JSON,
	// no access_token). Its messages never include the body.
	return &Error{Op: opExchange, HTTPStatus: http.StatusOK, Code: CodeInvalidResponse, Err: err}
}

// guidPattern matches a tenant ID (as opposed to common, organizations,
// consumers or a domain name).
var guidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// account checks the id_token against issuer (the discovery document's
// template) and returns the account it names.
func (c *Client) account(raw, issuer string) (connection.Account, error) {
	claims, err := parseIDToken(raw)
	if err != nil {
		return connection.Account{}, &IDTokenError{Reason: err.Error()}
	}
	if !claims.Aud.contains(c.clientID) {
		return connection.Account{}, &IDTokenError{Reason: fmt.Sprintf("aud %q is not the client id", []string(claims.Aud))}
	}
	if claims.Tid == "" || claims.Oid == "" {
		return connection.Account{}, &IDTokenError{Reason: "tid or oid is missing"}
	}
	if !guidPattern.MatchString(claims.Tid) {
		// Microsoft's tid is a GUID; anything else would also be pasted
		// into the issuer template below.
		return connection.Account{}, &IDTokenError{Reason: "tid is not a tenant ID"}
	}
	// The issuer's host is not always the authority's (Azure China's
	// login.chinacloudapi.cn issues as login.partner.microsoftonline.cn,
	// login.windows.net as login.microsoftonline.com), so only the
	// authority's own document says what it is. OpenID Connect Core
	// 3.1.3.7 point 2: exact match.
	if want := expectedIssuer(issuer, claims.Tid); claims.Iss != want {
		return connection.Account{}, &IDTokenError{Reason: fmt.Sprintf("iss %q is not %q", claims.Iss, want)}
	}
	if t := issuerTenant(issuer); t != tenantPlaceholder && !strings.EqualFold(t, claims.Tid) {
		// A fixed issuer (consumers, a tenant) names one tenant: a token
		// of another tenant cannot have come from it.
		return connection.Account{}, &IDTokenError{Reason: fmt.Sprintf("tid %q is not the issuer's tenant", claims.Tid)}
	}
	if guidPattern.MatchString(c.tenant) && !strings.EqualFold(c.tenant, claims.Tid) {
		// A single-tenant configuration must not accept another tenant's
		// account, whatever the endpoint says.
		return connection.Account{}, &IDTokenError{Reason: fmt.Sprintf("tid %q is not the configured tenant", claims.Tid)}
	}
	return connection.Account{ID: claims.Oid, TenantID: claims.Tid}, nil
}

// grant converts a checked token response.
func (c *Client) grant(tr tokenResponse) Tokens {
	return Tokens{
		AccessToken:  tr.AccessToken,
		RefreshToken: tr.RefreshToken,
		ExpiresAt:    c.now().Add(time.Duration(tr.ExpiresIn) * time.Second),
		Scopes:       strings.Fields(tr.Scope),
	}
}

// Refresh redeems a refresh token for new tokens. It sends grant_type,
// refresh_token, client_id, scope (the configured scopes: omitting scope has
// produced AADSTS90009) and the client credential in the form body, with no
// Authorization header. Microsoft rotates refresh tokens: store the returned
// one. When the answer has none, Tokens.RefreshToken is empty and the caller
// keeps the one it has (Microsoft does not revoke it on use). On
// invalid_client the credential is renewed and the request sent once more.
func (c *Client) Refresh(ctx context.Context, refreshToken string) (Tokens, error) {
	if refreshToken == "" {
		return Tokens{}, errors.New("msidentity: refresh: no refresh token")
	}
	return c.tokenRequest(ctx, opRefresh, func(ctx context.Context, cred url.Values) (Tokens, error) {
		form := url.Values{
			"grant_type":    {"refresh_token"},
			"refresh_token": {refreshToken},
			"client_id":     {c.clientID},
			"scope":         {c.refreshScope},
		}
		for k, vs := range cred {
			form[k] = vs
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.tokenURL, strings.NewReader(form.Encode()))
		if err != nil {
			return Tokens{}, fmt.Errorf("msidentity: refresh: %w", err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Accept", "application/json")
		status, h, body, err := c.do(req)
		if err != nil {
			return Tokens{}, &Error{Op: opRefresh, HTTPStatus: status, Code: CodeNetworkError, Err: err}
		}
		if status < 200 || status > 299 {
			return Tokens{}, responseError(opRefresh, status, h, body, c.now())
		}
		if len(body) > maxBody {
			return Tokens{}, &Error{Op: opRefresh, HTTPStatus: status, Code: CodeInvalidResponse, Err: errors.New("response larger than 1 MiB")}
		}
		tr, err := parseTokenResponse(body)
		if err != nil {
			return Tokens{}, &Error{Op: opRefresh, HTTPStatus: status, Code: CodeInvalidResponse, Err: err}
		}
		if tr.Error != "" {
			return Tokens{}, responseError(opRefresh, status, h, body, c.now())
		}
		return c.grant(tr), nil
	})
}

// do sends req and reads at most maxBody+1 bytes of the answer, so an
// oversized body is detected without being buffered.
func (c *Client) do(req *http.Request) (int, http.Header, []byte, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		// The connection broke mid-answer: no usable response.
		return resp.StatusCode, resp.Header, nil, err
	}
	return resp.StatusCode, resp.Header, body, nil
}

// tokenRequest runs one call to the token endpoint under the rules every
// such call shares: a refresh fails fast while the instance is paused (a
// code exchange never does: a person is waiting for it), apply the
// credential, pause the instance's refreshes after a 429, and on
// invalid_client renew the credential and send once more.
func (c *Client) tokenRequest(ctx context.Context, op string, send func(context.Context, url.Values) (Tokens, error)) (Tokens, error) {
	for attempt := 0; ; attempt++ {
		if wait := c.paused(); wait > 0 && op == opRefresh {
			return Tokens{}, &Error{Op: op, Code: CodeThrottled, Delay: wait, Err: connection.ErrPaused}
		}
		gen := c.credGen.Load()
		cred := url.Values{}
		if err := c.cred.Apply(ctx, cred); err != nil {
			return Tokens{}, fmt.Errorf("msidentity: %s: %w", op, err)
		}
		t, err := send(ctx, cred)
		var e *Error
		if !errors.As(err, &e) {
			return t, err
		}
		c.observe(e)
		if e.Code != "invalid_client" || attempt > 0 {
			return t, err
		}
		if rerr := c.renew(ctx, gen); rerr != nil {
			c.log.Error().Str("event", "client_credential_renew_failed").EmbedObject(e).AnErr("renew_error", rerr).
				Msg("Microsoft rejected the client credential and it could not be renewed")
			return t, err
		}
		c.log.Warn().Str("event", "client_credential_renewed").EmbedObject(e).
			Msg("Microsoft rejected the client credential; renewed it and retrying once")
	}
}

// renew renews the credential unless another request already did since
// gen was read (then the retry uses that renewal).
func (c *Client) renew(ctx context.Context, gen uint64) error {
	select {
	case c.renewLock <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.renewLock }()
	if c.credGen.Load() != gen {
		return nil
	}
	if err := c.cred.Renew(ctx); err != nil {
		return err
	}
	c.credGen.Add(1)
	return nil
}

// paused returns what remains of the instance's refresh pause.
func (c *Client) paused() time.Duration {
	c.throttleMu.Lock()
	defer c.throttleMu.Unlock()
	return c.throttleUntil.Sub(c.now())
}

// observe applies Microsoft's throttling to what it concerns (contract
// "Throttling"). A 429, on any token request, starts (or extends) this
// instance's refresh pause for its Retry-After (default 60 s) and logs
// `throttled`. AADSTS50196 concerns one user's connection: it only gets
// its Delay (default 60 s when Microsoft sent no Retry-After); the caller
// pauses that connection and logs it with the user_id, which this package
// does not know. Anything else pauses nothing.
func (c *Client) observe(e *Error) {
	scope := e.ThrottleScope()
	if scope == connection.ThrottleNone {
		return
	}
	if !e.retryAfterSent {
		e.Delay = defaultThrottlePause
	}
	if scope != connection.ThrottleInstance || e.Delay <= 0 {
		return
	}
	now := c.now()
	c.throttleMu.Lock()
	until := now.Add(e.Delay)
	if until.After(c.throttleUntil) {
		c.throttleUntil = until
	}
	c.throttleMu.Unlock()
	c.log.Warn().Str("event", "throttled").Float64("retry_after_s", e.Delay.Seconds()).EmbedObject(e).
		Msg("Microsoft throttled the app (HTTP 429); pausing this instance's refreshes (code exchanges still go through)")
}

// Me reads the signed-in user's Graph profile (GET {GraphURL}/v1.0/me).
// Graph's throttling is separate from the token endpoint's: a 429 here
// returns its Retry-After but pauses nothing else.
func (c *Client) Me(ctx context.Context, accessToken string) (Profile, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.graphURL+"/v1.0/me?$select=id,displayName,mail,userPrincipalName", nil)
	if err != nil {
		return Profile{}, fmt.Errorf("msidentity: me: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Accept", "application/json")
	status, h, body, err := c.do(req)
	if err != nil {
		return Profile{}, &Error{Op: opMe, HTTPStatus: status, Code: CodeNetworkError, Err: err}
	}
	if status < 200 || status > 299 {
		return Profile{}, responseError(opMe, status, h, body, c.now())
	}
	if len(body) > maxBody {
		return Profile{}, &Error{Op: opMe, HTTPStatus: status, Code: CodeInvalidResponse, Err: errors.New("response larger than 1 MiB")}
	}
	p, err := parseProfile(body)
	if err != nil {
		return Profile{}, &Error{Op: opMe, HTTPStatus: status, Code: CodeInvalidResponse, Err: err}
	}
	return p, nil
}

// Profile is Me as the connect flow wants it: an Account with Email and
// DisplayName. ID and TenantID stay empty: they come from the id_token
// (Graph's id is not the oid for personal accounts).
func (c *Client) Profile(ctx context.Context, accessToken string) (connection.Account, error) {
	p, err := c.Me(ctx, accessToken)
	if err != nil {
		return connection.Account{}, err
	}
	return connection.Account{Email: p.Email(), DisplayName: p.DisplayName}, nil
}
