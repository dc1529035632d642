// Package devidp is a local stand-in for the Microsoft identity platform
// (authorize and token endpoints), Microsoft Graph's /v1.0/me and the App
// Service managed identity endpoint. `make run`, the demo and the tests use
// it so the whole connect, refresh and managed-identity flow runs on
// loopback with Microsoft's real paths, parameters and JSON shapes.
//
// It keeps everything in memory, is safe for concurrent use, takes an
// injected clock, and has controls for tests and the demo: revoke an
// account, add latency, inject failures, count requests, and ask whether a
// stored refresh token is the newest or still accepted.
//
// It is never packaged for deployment and no production code path may
// import it.
package devidp

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// PersonalTenantID is the tenant of every personal Microsoft account.
const PersonalTenantID = "9188040d-6c67-4c5b-b112-36a304b66dad"

// ContosoTenantID is the work tenant of the default test accounts.
const ContosoTenantID = "4a6f2c1e-8b3d-4e7f-9a0c-5d1b2e3f4a6b"

// AssertionAudience is the resource a managed identity asks for when it
// wants a token Microsoft accepts as a client assertion.
const AssertionAudience = "api://AzureADTokenExchange"

// Account is a test user the sign-in page offers.
type Account struct {
	// OID and TenantID are what the id_token names (oid, tid).
	OID      string
	TenantID string
	// GraphID is /me's id: the OID for work accounts, a 16-hex-digit CID
	// for personal ones. Empty means the OID.
	GraphID           string
	DisplayName       string
	Mail              string // may be empty: /me then says null
	UserPrincipalName string
}

// Personal reports whether a is a personal Microsoft account.
func (a Account) Personal() bool { return a.TenantID == PersonalTenantID }

func (a Account) graphID() string {
	if a.GraphID != "" {
		return a.GraphID
	}
	return a.OID
}

// DefaultAccounts are two work accounts in Contoso and one personal account.
func DefaultAccounts() []Account {
	return []Account{
		{OID: "5d2f4c3b-7a8e-4f1d-9c6b-2e3a4b5c6d7e", TenantID: ContosoTenantID, DisplayName: "Ada Lovelace", Mail: "ada@contoso.com", UserPrincipalName: "ada@contoso.com"},
		{OID: "8a9b0c1d-2e3f-4a5b-8c7d-9e0f1a2b3c4d", TenantID: ContosoTenantID, DisplayName: "Grace Hopper", Mail: "grace@contoso.com", UserPrincipalName: "grace@contoso.com"},
		{OID: "00000000-0000-0000-6b1e-4f0a9c2d7e35", TenantID: PersonalTenantID, GraphID: "6b1e4f0a9c2d7e35", DisplayName: "Alan Turing", UserPrincipalName: "alan.turing@outlook.com"},
	}
}

// Config configures a Server. ClientID and RedirectURL are required.
type Config struct {
	// ClientID is the only application the stand-in knows.
	ClientID string
	// ClientSecret is the accepted client_secret; empty rejects every
	// secret (managed-identity mode: no secret exists).
	ClientSecret string
	// RedirectURL is the registered redirect URI; requests must use it
	// exactly.
	RedirectURL string
	// AcceptAssertion decides whether a client_assertion authenticates the
	// client. Nil accepts exactly the tokens this server's managed
	// identity endpoint issued for AssertionAudience that have neither
	// expired nor been invalidated (InvalidateAssertions). Return
	// ErrAssertionExpired for an expired one (AADSTS700024).
	AcceptAssertion func(assertion string) error
	// HomeTenantID is the tenant holding the app registration: the only
	// one where a client-credentials request finds the app. Default
	// ContosoTenantID.
	HomeTenantID string
	// IdentityHeader is the X-IDENTITY-HEADER value the managed identity
	// endpoint requires (IDENTITY_HEADER); empty means a random one.
	IdentityHeader string
	// ManagedIdentityClientID is the user-assigned identity's client ID;
	// when set, a request naming another client_id is refused.
	ManagedIdentityClientID string
	// Accounts default to DefaultAccounts.
	Accounts []Account
	// ExpiresIn is the access token lifetime (expires_in). Default 1 hour.
	ExpiresIn time.Duration
	// AssertionLifetime is the managed identity tokens' lifetime. Default 1
	// hour.
	AssertionLifetime time.Duration
	// IssuerBase is the issuer's base URL, announced by the discovery
	// document ({IssuerBase}/{tenantid}/v2.0) and carried by id_tokens
	// ({IssuerBase}/{tid}/v2.0). Empty means this server's own URL as the
	// request reached it, as Microsoft's public cloud does. Set it to play
	// an authority whose issuer has another host: Azure China
	// (authority login.chinacloudapi.cn, issuer
	// https://login.partner.microsoftonline.cn) or the alias
	// login.windows.net (issuer https://login.microsoftonline.com).
	IssuerBase string
	// Now is the clock, required (time.Now for a live stand-in): code and
	// token lifetimes, revocation and the 90-day inactivity window use it.
	Now func() time.Time
	// Logger receives one line per request outcome (never a token).
	Logger zerolog.Logger
}

// Lifetimes mirroring Microsoft's.
const (
	codeLifetime       = 10 * time.Minute
	refreshInactivity  = 90 * 24 * time.Hour
	idTokenLifetime    = time.Hour
	defaultExpiresIn   = time.Hour
	maxFormBytes       = 1 << 20
	pruneEveryIssuance = 1024
)

// Server is the stand-in. Serve it with net/http (it is an http.Handler).
type Server struct {
	cfg      Config
	mux      *http.ServeMux
	now      func() time.Time
	log      zerolog.Logger
	identity string // X-IDENTITY-HEADER

	mu        sync.Mutex
	secrets   []string // accepted client secrets (SetClientSecrets)
	expired   map[string]bool
	noFedCred bool // RemoveFederatedCredential
	accounts  []Account
	revoked   map[string]uint64 // oid -> seq at revocation: older grants die
	codes     map[string]*authCode
	refresh   map[string]*refreshRecord
	grants    map[string]*grantRecord
	access    map[string]*accessRecord
	miTokens  map[string]*miRecord
	miEpoch   uint64 // InvalidateAssertions bumps it
	seq       uint64
	issued    int
	counts    map[string]int
	miCount   int
	latency   time.Duration
	expiresIn time.Duration
	failures  []Response

	issuerBase       string    // SetIssuerBase; "" = own address
	forgedIssuer     string    // ForgeIssuer; "" = issuerBase
	discoveryFailure *Response // FailDiscovery
	discoveries      int
}

type authCode struct {
	clientID, redirectURI, challenge, nonce string
	oid                                     string
	scopes                                  grantScopes
	expires                                 time.Time
	used                                    bool
}

// grantScopes is what a user consented to in one sign-in.
type grantScopes struct {
	resource []string // Graph scopes, short form, request order
	openid   bool
	profile  bool
	offline  bool
}

// grantRecord is one sign-in's chain of rotated refresh tokens.
type grantRecord struct {
	oid      string
	clientID string
	scopes   grantScopes
	latest   string
}

type refreshRecord struct {
	grant    string
	seq      uint64
	issuedAt time.Time
}

type accessRecord struct {
	oid     string
	expires time.Time
}

type miRecord struct {
	resource string
	expires  time.Time
	epoch    uint64
}

// New builds a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Now == nil {
		return nil, errors.New("devidp: Config.Now is required")
	}
	if cfg.ClientID == "" {
		return nil, errors.New("devidp: client id is required")
	}
	if cfg.RedirectURL == "" {
		return nil, errors.New("devidp: redirect url is required")
	}
	if cfg.Accounts == nil {
		cfg.Accounts = DefaultAccounts()
	}
	seen := map[string]bool{}
	for _, a := range cfg.Accounts {
		if a.OID == "" || a.TenantID == "" || a.UserPrincipalName == "" {
			return nil, fmt.Errorf("devidp: account %q needs an oid, a tenant id and a user principal name", a.DisplayName)
		}
		if seen[a.OID] {
			return nil, fmt.Errorf("devidp: duplicate account oid %s", a.OID)
		}
		seen[a.OID] = true
	}
	if cfg.ExpiresIn <= 0 {
		cfg.ExpiresIn = defaultExpiresIn
	}
	if cfg.AssertionLifetime <= 0 {
		cfg.AssertionLifetime = time.Hour
	}
	cfg.IssuerBase = strings.TrimRight(cfg.IssuerBase, "/")
	if cfg.HomeTenantID == "" {
		cfg.HomeTenantID = ContosoTenantID
	}
	now := cfg.Now
	s := &Server{
		cfg:       cfg,
		now:       now,
		log:       cfg.Logger,
		identity:  cfg.IdentityHeader,
		secrets:   []string{cfg.ClientSecret},
		accounts:  append([]Account(nil), cfg.Accounts...),
		revoked:   map[string]uint64{},
		codes:     map[string]*authCode{},
		refresh:   map[string]*refreshRecord{},
		grants:    map[string]*grantRecord{},
		access:    map[string]*accessRecord{},
		miTokens:  map[string]*miRecord{},
		counts:    map[string]int{},
		expiresIn: cfg.ExpiresIn,

		issuerBase: cfg.IssuerBase,
	}
	if s.identity == "" {
		s.identity = randomToken(24)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{tenant}/oauth2/v2.0/authorize", s.authorizePage)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/authorize", s.authorizeChoice)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", s.token)
	mux.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", s.openIDConfiguration)
	mux.HandleFunc("GET /{tenant}/discovery/v2.0/keys", s.keys)
	mux.HandleFunc("GET /v1.0/me", s.me)
	mux.HandleFunc("GET /devidp/{$}", s.adminPage)
	mux.HandleFunc("POST /devidp/revoke", s.adminRevoke)
	mux.HandleFunc("GET /devidp/status", s.adminStatus)
	mux.HandleFunc("POST /devidp/expire-secret", s.adminExpireSecret)
	mux.HandleFunc("GET "+ManagedIdentityPath, s.managedIdentity)
	s.mux = mux
	return s, nil
}

// ServeHTTP serves every route of the stand-in.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// account returns the account with oid. Caller holds s.mu or accounts are
// never mutated (they are not after New).
func (s *Server) account(oid string) (Account, bool) {
	for _, a := range s.accounts {
		if a.OID == oid {
			return a, true
		}
	}
	return Account{}, false
}

// eligible lists the accounts a tenant path segment may sign in, as
// Microsoft does: consumers only personal accounts, organizations only work
// accounts, a tenant ID only its members, common everyone.
func (s *Server) eligible(tenant string) []Account {
	var out []Account
	for _, a := range s.accounts {
		switch strings.ToLower(tenant) {
		case "common":
		case "consumers":
			if !a.Personal() {
				continue
			}
		case "organizations":
			if a.Personal() {
				continue
			}
		default:
			if looksLikeGUID(tenant) && !strings.EqualFold(tenant, a.TenantID) {
				continue
			}
			if !looksLikeGUID(tenant) && a.Personal() {
				continue // a domain names a work tenant
			}
		}
		out = append(out, a)
	}
	return out
}

func looksLikeGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
				return false
			}
		}
	}
	return true
}

// randomToken returns n random bytes, base64url: opaque like Microsoft's
// codes and tokens.
func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		// crypto/rand never fails on supported platforms (Go 1.24+ it
		// aborts the program instead); keep the signature simple.
		panic("devidp: crypto/rand: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// newGUID returns a random RFC 4122 version 4 UUID for trace and
// correlation IDs.
func newGUID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic("devidp: crypto/rand: " + err.Error())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// baseURL is this server as the request reached it.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// issuerBaseLocked is the issuer's base URL the discovery document
// announces. Caller holds s.mu.
func (s *Server) issuerBaseLocked(r *http.Request) string {
	if s.issuerBase != "" {
		return s.issuerBase
	}
	return baseURL(r)
}

// tokenIssuerLocked is the base of the iss id_tokens carry: the announced
// one unless ForgeIssuer says otherwise. Caller holds s.mu.
func (s *Server) tokenIssuerLocked(r *http.Request) string {
	if s.forgedIssuer != "" {
		return s.forgedIssuer
	}
	return s.issuerBaseLocked(r)
}

// prune drops expired codes, access tokens, dead refresh tokens and
// assertions so a long demo run does not grow without bound. Caller holds
// s.mu.
func (s *Server) prune(now time.Time) {
	for k, c := range s.codes {
		if !now.Before(c.expires) {
			delete(s.codes, k)
		}
	}
	for k, a := range s.access {
		if !now.Before(a.expires) {
			delete(s.access, k)
		}
	}
	for k, rt := range s.refresh {
		if now.Sub(rt.issuedAt) >= refreshInactivity {
			delete(s.refresh, k)
		}
	}
	for k, m := range s.miTokens {
		if !now.Before(m.expires) {
			delete(s.miTokens, k)
		}
	}
}
