package msidentity

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/clocktest"
)

const (
	testClientID = "11111111-2222-3333-4444-555555555555"
	testRedirect = "http://localhost:8080/api/callback"
	testTenantID = "4a6f2c1e-8b3d-4e7f-9a0c-5d1b2e3f4a6b"
	testOID      = "5d2f4c3b-7a8e-4f1d-9c6b-2e3a4b5c6d7e"
	testSecret   = "s3cr3t-value"
)

var testScopes = []string{"User.Read", "Files.ReadWrite.All", "offline_access"}

// newClock is a settable clock for the Client's Now.
func newClock() *clocktest.Clock {
	return clocktest.New(time.Date(2026, 11, 25, 23, 30, 0, 0, time.UTC))
}

// secrets is a SecretSource with a cache: Get serves the cached value,
// Reload copies the vault's value into the cache.
type secrets struct {
	mu      sync.Mutex
	cached  string
	vault   string
	gets    int
	reloads int
	err     error
}

func (s *secrets) Get(_ context.Context, name string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gets++
	if name != ClientSecretName {
		return "", io.ErrUnexpectedEOF
	}
	return s.cached, nil
}

func (s *secrets) Reload(_ context.Context, _ string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reloads++
	if s.err != nil {
		return "", s.err
	}
	s.cached = s.vault
	return s.cached, nil
}

func (s *secrets) counts() (gets, reloads int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets, s.reloads
}

// recorded is one request the stand-in saw.
type recorded struct {
	Method, Path string
	Header       http.Header
	Form         url.Values
}

// standIn is an httptest server playing Microsoft: it serves the discovery
// document as Microsoft does (issuerFor), counted apart; handle answers
// every other request, which is recorded and counted.
type standIn struct {
	*httptest.Server
	mu          sync.Mutex
	requests    []recorded
	count       atomic.Int64
	discoveries atomic.Int64
}

// discoverySuffix ends where the client reads the discovery document.
const discoverySuffix = "/v2.0/.well-known/openid-configuration"

// issuerFor is the issuer Microsoft's document announces for a tenant
// segment: a template for common and organizations, the fixed personal
// tenant for consumers, the tenant itself for a tenant ID.
func issuerFor(host, tenant string) string {
	switch strings.ToLower(tenant) {
	case "common", "organizations":
		return host + "/{tenantid}/v2.0"
	case "consumers":
		return host + "/" + personalTenantID + "/v2.0"
	}
	return host + "/" + tenant + "/v2.0"
}

const personalTenantID = "9188040d-6c67-4c5b-b112-36a304b66dad"

func discoveryJSON(t *testing.T, authority, tenant, issuer string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"token_endpoint":                        authority + "/" + tenant + "/oauth2/v2.0/token",
		"authorization_endpoint":                authority + "/" + tenant + "/oauth2/v2.0/authorize",
		"jwks_uri":                              authority + "/" + tenant + "/discovery/v2.0/keys",
		"issuer":                                issuer,
		"id_token_signing_alg_values_supported": []string{"RS256"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newStandIn(t *testing.T, handle http.HandlerFunc) *standIn {
	t.Helper()
	return newStandInDiscovery(t, nil, handle)
}

// newStandInDiscovery is newStandIn whose discovery document discover
// answers (nil: Microsoft's, on the stand-in's own host).
func newStandInDiscovery(t *testing.T, discover http.HandlerFunc, handle http.HandlerFunc) *standIn {
	t.Helper()
	s := &standIn{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tenant, ok := strings.CutSuffix(r.URL.Path, discoverySuffix); ok && r.Method == http.MethodGet {
			s.discoveries.Add(1)
			if discover != nil {
				discover(w, r)
				return
			}
			tenant = strings.TrimPrefix(tenant, "/")
			writeJSONBody(w, 200, discoveryJSON(t, s.URL, tenant, issuerFor(s.URL, tenant)))
			return
		}
		s.count.Add(1)
		_ = r.ParseForm()
		s.mu.Lock()
		s.requests = append(s.requests, recorded{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Form: r.PostForm})
		s.mu.Unlock()
		handle(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *standIn) last(t *testing.T) recorded {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.requests) == 0 {
		t.Fatal("the stand-in saw no request")
	}
	return s.requests[len(s.requests)-1]
}

// options tweak a test client's Config.
type option func(*Config)

func withCredential(c ClientCredential) option { return func(cfg *Config) { cfg.Credential = c } }
func withClock(c *clocktest.Clock) option      { return func(cfg *Config) { cfg.Now = c.Now } }
func withNow(now func() time.Time) option      { return func(cfg *Config) { cfg.Now = now } }
func withLogger(l zerolog.Logger) option       { return func(cfg *Config) { cfg.Logger = l } }
func withTenant(t string) option               { return func(cfg *Config) { cfg.Tenant = t } }
func withHTTPClient(hc *http.Client) option    { return func(cfg *Config) { cfg.HTTPClient = hc } }

// newTestClient builds a Client whose authority and Graph are base.
func newTestClient(t *testing.T, base string, opts ...option) *Client {
	t.Helper()
	cfg := Config{
		AuthorityHost: base,
		Tenant:        "common",
		ClientID:      testClientID,
		RedirectURL:   testRedirect,
		GraphURL:      base,
		Scopes:        testScopes,
		HTTPClient:    &http.Client{Timeout: 5 * time.Second},
		Now:           newClock().Now,
		Credential:    NewSecretCredential(&secrets{cached: testSecret, vault: testSecret}),
	}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// jwtOf builds an unsigned JWS with claims.
func jwtOf(t *testing.T, claims map[string]any) string {
	t.Helper()
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"typ":"JWT","alg":"RS256","kid":"x"}`)) + "." + enc.EncodeToString(b) + "." + enc.EncodeToString([]byte("sig"))
}

// goodClaims are an id_token's claims that pass for authority base.
func goodClaims(base string) map[string]any {
	return map[string]any{
		"aud": testClientID, "iss": base + "/" + testTenantID + "/v2.0",
		"oid": testOID, "tid": testTenantID, "name": "Ada Lovelace", "preferred_username": "ada@contoso.com",
		"ver": "2.0",
	}
}

// tokenJSON is a success body as Microsoft sends it.
func tokenJSON(t *testing.T, fields map[string]any) []byte {
	t.Helper()
	body := map[string]any{
		"token_type": "Bearer", "scope": "User.Read Files.ReadWrite.All openid profile email",
		"expires_in": 3600, "ext_expires_in": 3600, "access_token": "at-1", "refresh_token": "rt-2",
	}
	for k, v := range fields {
		if v == nil {
			delete(body, k)
			continue
		}
		body[k] = v
	}
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeJSONBody(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
