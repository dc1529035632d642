package httpapi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/config"
	"github.com/megdocs/msconnector/handler/internal/connectflow"
	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/httpapi"
	"github.com/megdocs/msconnector/handler/internal/memstore"
	"github.com/megdocs/msconnector/handler/internal/tokens"
)

// The fixture is the real HTTP surface (httpapi.Server.Handler, the same
// routes, middleware and error mapping app.build wires) over a memstore and
// a fake Microsoft, so a fuzz iteration costs microseconds and touches no
// network.

const (
	cmsKey         = "cms-key-current-0123456789abcdef"
	cmsKeyPrevious = "cms-key-previous-0123456789abcdef"
	callbackURL    = "https://connector.example.test/api/callback"
	publicBase     = "https://connector.example.test"
	allowedReturn  = "https://cms.example.test/settings/"
	authorizeBase  = "https://login.example.test/common/oauth2/v2.0/authorize"
	// goodCode is the only authorization code the fake Microsoft redeems;
	// consentCode fails as consent_required.
	goodCode    = "good-code"
	consentCode = "consent-code"
)

// fixedNow is the fixture's clock: every expiry is relative to it.
var fixedNow = time.Date(2026, 11, 25, 23, 30, 0, 0, time.UTC)

func now() time.Time { return fixedNow }

// settings are the handler's environment in the fixture; config.Load must
// find no problem with them, or the routes would answer 503.
var settings = map[string]string{
	"TABLES_CONNECTION_STRING":     "UseDevelopmentStorage=true",
	"MICROSOFT_CLIENT_ID":          "11111111-2222-4333-8444-555555555555",
	"MICROSOFT_OAUTH_CALLBACK_URL": callbackURL,
	"MICROSOFT_CLIENT_SECRET":      "not-used-by-the-fake",
	"ALLOWED_RETURN_URLS":          allowedReturn + ",http://localhost:8000/app",
}

// fakeIdentity is Microsoft for the fixture. It checks the PKCE binding:
// a code is redeemed only with the verifier of the state it was issued for.
type fakeIdentity struct {
	mu        sync.Mutex
	verifiers map[string]bool // verifiers handed to AuthCodeURL or planted by the test
	exchanges int
}

func (f *fakeIdentity) AuthCodeURL(state, verifier, loginHint string) string {
	f.mu.Lock()
	f.verifiers[verifier] = true
	f.mu.Unlock()
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{
		"client_id": {settings["MICROSOFT_CLIENT_ID"]}, "response_type": {"code"},
		"redirect_uri": {callbackURL}, "response_mode": {"query"}, "state": {state},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
	}
	if loginHint != "" {
		q.Set("login_hint", loginHint)
	}
	return authorizeBase + "?" + q.Encode()
}

func (f *fakeIdentity) Exchange(_ context.Context, code, verifier string) (connection.Grant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exchanges++
	if !f.verifiers[verifier] {
		return connection.Grant{}, errors.New("fake: AADSTS501481: the code_verifier does not match")
	}
	switch code {
	case goodCode:
		return connection.Grant{
			AccessToken: "fake-access-token", RefreshToken: "fake-refresh-token",
			ExpiresAt: fixedNow.Add(time.Hour), Scopes: []string{"User.Read", "offline_access"},
			Account: connection.Account{ID: "oid-1", TenantID: "tid-1"},
		}, nil
	case consentCode:
		return connection.Grant{}, classified{"consent_required"}
	}
	return connection.Grant{}, classified{"invalid_grant"}
}

func (f *fakeIdentity) Profile(context.Context, string) (connection.Account, error) {
	return connection.Account{Email: "ada@contoso.com", DisplayName: "Ada Lovelace"}, nil
}

// refresher is Microsoft's token endpoint for refresh tokens: every
// refresh rotates.
type refresher struct{}

func (refresher) Refresh(_ context.Context, rt string) (connection.Grant, error) {
	return connection.Grant{AccessToken: "refreshed-access-token", RefreshToken: rt + "-rotated",
		ExpiresAt: fixedNow.Add(time.Hour), Scopes: []string{"User.Read", "offline_access"}}, nil
}

// classified is a Microsoft error as msidentity reports it.
type classified struct{ code string }

func (c classified) Error() string                { return "fake: " + c.code }
func (c classified) ErrorClass() connection.Class { return connection.ClassReconnectRequired }
func (c classified) ErrorCode() string            { return c.code }

// fixture is one server with its store, fake and log.
type fixture struct {
	srv     *httpapi.Server
	handler http.Handler
	store   *memstore.Store
	idp     *fakeIdentity
	logs    *bytes.Buffer
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	cfg := config.Load(func(k string) string { return settings[k] })
	if len(cfg.Problems) > 0 {
		tb.Fatalf("fixture settings: %v", cfg.Problems)
	}
	store := memstore.New(memstore.Options{Now: now})
	allow, err := connectflow.NewAllowlist(cfg.AllowedReturnURLs)
	if err != nil {
		tb.Fatal(err)
	}
	logs := &bytes.Buffer{}
	log := zerolog.New(logs)
	idp := &fakeIdentity{verifiers: map[string]bool{}}
	flow := &connectflow.Service{
		Store: store, Pending: store, Identity: idp, Allowlist: allow,
		Events: connection.NopPublisher{}, PublicBaseURL: cfg.PublicBaseURL, Log: log, Now: now,
	}
	tok := &tokens.Service{Store: store, Refresher: refresher{}, Events: connection.NopPublisher{},
		Policy: connection.DefaultPolicy(), Log: log, Now: now}
	tb.Cleanup(func() { _ = tok.Close(context.Background()) })
	srv := &httpapi.Server{
		Config: cfg, Flow: flow, Tokens: tok, Store: store, Events: connection.NopPublisher{},
		Keys: func(context.Context) (string, string, error) { return cmsKey, cmsKeyPrevious, nil },
		Log:  log, Now: now,
	}
	return &fixture{srv: srv, handler: srv.Handler(), store: store, idp: idp, logs: logs}
}

// Fixed bearer tokens the fixture plants: 43 characters of base64url, as
// connectflow issues them.
var (
	sessionToken = bearerToken(1)
	stateToken   = bearerToken(2)
	cookieValue  = bearerToken(3)
	verifier     = bearerToken(4)
)

func bearerToken(seed byte) string {
	return base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{seed, seed + 0x40, seed + 0x80}, 11)[:32])
}

func hashOf(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// plantSession stores an unused connect session for sessionToken.
func (f *fixture) plantSession(tb testing.TB, userID string) {
	tb.Helper()
	err := f.store.PutPending(context.Background(), connection.Pending{
		Kind: connection.PendingSession, ID: hashOf(sessionToken), UserID: userID,
		ReturnURL: allowedReturn + "?tab=microsoft", CreatedAt: fixedNow, ExpiresAt: fixedNow.Add(connectflow.SessionTTL),
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// plantState stores an unused OAuth state for stateToken, bound to
// cookieValue, as GET /api/connect would have.
func (f *fixture) plantState(tb testing.TB, userID string) {
	tb.Helper()
	f.idp.mu.Lock()
	f.idp.verifiers[verifier] = true
	f.idp.mu.Unlock()
	err := f.store.PutPending(context.Background(), connection.Pending{
		Kind: connection.PendingState, ID: hashOf(stateToken), UserID: userID,
		ReturnURL: allowedReturn + "?tab=microsoft", Verifier: verifier, BrowserHash: hashOf(cookieValue),
		CreatedAt: fixedNow, ExpiresAt: fixedNow.Add(connectflow.StateTTL),
	})
	if err != nil {
		tb.Fatal(err)
	}
}

func (f *fixture) pendingUsed(tb testing.TB, kind connection.PendingKind, tok string) bool {
	tb.Helper()
	p, err := f.store.GetPending(context.Background(), kind, hashOf(tok))
	if err != nil {
		tb.Fatalf("planted %s is gone: %v", kind, err)
	}
	return p.Used
}

// connections counts stored connections.
func (f *fixture) connections(tb testing.TB) int {
	tb.Helper()
	p, err := f.store.List(context.Background(), connection.ListQuery{Limit: 1000})
	if err != nil {
		tb.Fatal(err)
	}
	return len(p.Connections)
}
