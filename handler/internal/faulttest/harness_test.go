package faulttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/app"
	"github.com/megdocs/msconnector/handler/internal/azurite"
	"github.com/megdocs/msconnector/handler/internal/config"
	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/devidp"
	"github.com/megdocs/msconnector/handler/internal/logtest"
	"github.com/megdocs/msconnector/handler/internal/msidentity"
	"github.com/megdocs/msconnector/handler/internal/sealing"
	"github.com/megdocs/msconnector/handler/internal/secrets"
	"github.com/megdocs/msconnector/handler/internal/tablestore"
)

// One Azurite serves the whole test binary. The contract fixes the table
// names, so each stack gets a storage account of its own instead: Azurite
// serves every account named in AZURITE_ACCOUNTS (read when it starts), and
// a sweep then sees only its own test's connections.
const maxAccounts = 40

func TestMain(m *testing.M) {
	accts := []string{azurite.Account + ":" + azurite.Key}
	for i := range maxAccounts {
		accts = append(accts, fmt.Sprintf("fault%02d:%s", i, azurite.Key))
	}
	os.Setenv("AZURITE_ACCOUNTS", strings.Join(accts, ";"))
	os.Exit(azurite.RunTests(m))
}

var nextAccount atomic.Int32

// tablesFor returns a connection string for a storage account no other test
// uses, on the shared emulator.
func tablesFor(t *testing.T) (connString, endpoint string) {
	t.Helper()
	cs := azurite.ForTest(t) // skips under SKIP_AZURITE=1
	n := int(nextAccount.Add(1)) - 1
	if n >= maxAccounts {
		t.Fatalf("more than %d stacks in one test binary: raise maxAccounts", maxAccounts)
	}
	var base string
	for _, part := range strings.Split(cs, ";") {
		if v, ok := strings.CutPrefix(part, "TableEndpoint="); ok {
			base = strings.TrimSuffix(strings.TrimRight(v, "/"), "/"+azurite.Account)
		}
	}
	if base == "" {
		t.Fatalf("no TableEndpoint in %q", cs)
	}
	acct := fmt.Sprintf("fault%02d", n)
	endpoint = base + "/" + acct
	return fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;TableEndpoint=%s", acct, azurite.Key, endpoint), endpoint
}

// clock is the handler's clock: real time plus an offset a test advances
// (past a throttling pause, a secrets TTL) instead of sleeping. Not a
// clocktest.Clock, which stands still: the stack runs real servers whose
// timeouts use wall time, so the handler's clock must move with it.
type clock struct{ offset atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

const clientID = "11111111-2222-4333-8444-555555555555"

var scopes = []string{"User.Read", "Files.ReadWrite.All", "offline_access"}

type options struct {
	// accounts: devidp test accounts, one per connection a test seeds, so
	// devidp.LatestRefreshToken(oid) speaks of exactly one connection.
	accounts int
	// clientTimeout of the handler's outgoing client (default: the
	// production client's 30 s).
	clientTimeout time.Duration
	settings      map[string]string
	// vault: secrets come from this Key Vault stand-in instead of the
	// environment.
	vault *vaultStandIn
}

// stack is the whole product in this process: app.Serve (the composition
// root Azure runs) with its outgoing client going through an Injector to
// the devidp stand-in, the shared Azurite and, optionally, a Key Vault
// stand-in.
type stack struct {
	url      string
	cmsKey   string
	idp      *devidp.Server
	inj      *Injector
	clock    *clock
	logs     *logtest.Buffer
	accounts []devidp.Account
	// store reads and writes the same tables with the same key, but not
	// through the injector: the test's view of what is stored.
	store *tablestore.Store
	ms    *msidentity.Client // the test's own client: seeds grants
	hc    *http.Client       // the test's client for the CMS API and devidp
	// tables is the stack's Table service connection string, for reading
	// raw entities.
	tables string

	// clientSecret is the one devidp accepts (the app's, unless a test
	// overrides MICROSOFT_CLIENT_SECRET).
	clientSecret string
}

func start(t *testing.T, o options) *stack {
	t.Helper()
	if o.accounts == 0 {
		o.accounts = 8
	}
	if o.clientTimeout == 0 {
		o.clientTimeout = app.NewHTTPClient().Timeout
	}
	tables, tableEndpoint := tablesFor(t)
	logs := &logtest.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", tail(logs.String(), 200))
		}
	})

	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	handlerURL := "http://" + hl.Addr().String()
	accounts := testAccounts(o.accounts)
	clientSecret, cmsKey := randomString(32), randomString(32)
	encKey := make([]byte, sealing.KeySize)
	_, _ = rand.Read(encKey)
	idp, err := devidp.New(devidp.Config{
		ClientID: clientID, ClientSecret: clientSecret, RedirectURL: handlerURL + "/api/callback",
		Accounts: accounts, Logger: component(logs, "devidp"), Now: time.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	idpSrv := httptest.NewServer(idp)
	t.Cleanup(idpSrv.Close)

	env := map[string]string{
		"TABLES_CONNECTION_STRING":     tables,
		"MICROSOFT_CLIENT_ID":          clientID,
		"MICROSOFT_OAUTH_CALLBACK_URL": handlerURL + "/api/callback",
		"MICROSOFT_AUTHORITY_HOST":     idpSrv.URL,
		"MICROSOFT_GRAPH_URL":          idpSrv.URL,
		"MICROSOFT_CLIENT_AUTH":        config.ClientAuthSecret,
		"ALLOWED_RETURN_URLS":          "http://localhost/",
	}
	var keyring sealing.Keyring
	var cred azcore.TokenCredential
	if o.vault != nil {
		o.vault.put(secrets.CMSAPIKey, "", cmsKey)
		o.vault.put(secrets.ClientSecret, "", clientSecret)
		o.vault.put(secrets.EncryptionKey, keyVersion1, base64.StdEncoding.EncodeToString(encKey))
		env["KEY_VAULT_URL"] = vaultURL
		env["SECRETS_CACHE_TTL"] = "1s"
		keyring = staticKeyring{sealing.Key{Version: keyVersion1, Bytes: encKey}}
		cred = staticCredential{}
	} else {
		env[secrets.EnvClientSecret] = clientSecret
		env[secrets.EnvCMSAPIKey] = cmsKey
		env[secrets.EnvEncryptionKey] = base64.StdEncoding.EncodeToString(encKey)
		keyring = sealing.NewSecretKeyring(secrets.NewEnv(mapEnv(env)))
	}
	for k, v := range o.settings {
		env[k] = v
	}

	inj := New(loopbackTransport(o.vault))
	for u, d := range map[string]Dependency{idpSrv.URL: Microsoft, tableEndpoint: Tables, vaultURL: KeyVault} {
		if err := inj.Route(u, d); err != nil {
			t.Fatal(err)
		}
	}
	clk := &clock{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- app.Serve(ctx, hl, config.Load(mapEnv(env)), app.Deps{
			Getenv: mapEnv(env), Log: component(logs, "handler"),
			HTTPClient: &http.Client{Transport: inj, Timeout: o.clientTimeout},
			Credential: cred, Now: clk.Now,
		})
	}()
	t.Cleanup(func() {
		inj.Clear() // release held requests so shutdown does not wait on them
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("app.Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the handler did not stop within 30 s")
		}
	})

	svc, err := aztables.NewServiceClientFromConnectionString(tables, nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 60 * time.Second}
	ms, err := msidentity.New(msidentity.Config{
		AuthorityHost: idpSrv.URL, ClientID: clientID, RedirectURL: handlerURL + "/api/callback",
		GraphURL: idpSrv.URL, Scopes: scopes, HTTPClient: hc, Now: time.Now,
		Credential: msidentity.NewSecretCredential(msidentity.SecretFunc(func(context.Context, string, bool) (string, error) {
			return clientSecret, nil
		})),
	})
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{
		url: handlerURL, cmsKey: cmsKey, idp: idp, inj: inj, clock: clk, logs: logs, accounts: accounts,
		store: tablestore.New(svc, sealing.New(keyring), tablestore.Options{Now: time.Now}),
		ms:    ms, hc: hc, tables: tables,
	}
	s.clientSecret = clientSecret
	waitReady(t, handlerURL+"/")
	return s
}

func testAccounts(n int) []devidp.Account {
	out := make([]devidp.Account, n)
	for i := range out {
		out[i] = devidp.Account{
			OID:               fmt.Sprintf("00000000-0000-4000-8000-%012d", i),
			TenantID:          devidp.ContosoTenantID,
			DisplayName:       fmt.Sprintf("Test User %d", i),
			Mail:              fmt.Sprintf("user%d@contoso.com", i),
			UserPrincipalName: fmt.Sprintf("user%d@contoso.com", i),
		}
	}
	return out
}

// loopbackTransport is the production transport (app.NewHTTPClient's) that
// dials loopback addresses only; with a vault stand-in it also reaches the
// vault's Azure host name on the stand-in and trusts the stand-in's
// certificate, so the SDK's challenge check runs as in production.
func loopbackTransport(v *vaultStandIn) *http.Transport {
	tr := app.NewHTTPClient().Transport.(*http.Transport).Clone()
	tr.Proxy = nil
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if v != nil && addr == vaultHost+":443" {
			addr = v.addr
		}
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("faulttest: refusing to dial %s: tests talk to 127.0.0.1 only", addr)
		}
		return dial(ctx, network, addr)
	}
	if v != nil {
		tr.TLSClientConfig = v.clientTLS()
	}
	return tr
}

func waitReady(t *testing.T, u string) {
	t.Helper()
	c := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(20 * time.Second); ; {
		resp, err := c.Get(u)
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer: %v", u, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mapEnv(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func component(w io.Writer, name string) zerolog.Logger {
	return zerolog.New(w).With().Timestamp().Str("component", name).Logger()
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func tail(s string, lines int) string {
	all := strings.Split(s, "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// ---- seeding ----

// conn is a seeded connection: a CMS user with a grant devidp issued
// through the real authorization code flow (product msidentity client,
// PKCE, devidp's sign-in), stored through the product's table store.
type conn struct {
	userID  string
	oid     string
	seedRT  string // the refresh token stored at seeding
	seedAT  string
	account devidp.Account
	// soleGrant: the only sign-in of its account, so
	// devidp.LatestRefreshToken(oid) is this connection's newest token.
	soleGrant bool
}

// seed stores n connections, one per account first..first+n-1, that are
// due for the sweep (last refreshed 25 hours ago) and whose access token
// has expired, so the token API must refresh too.
func (s *stack) seed(t *testing.T, first, n int) []*conn {
	t.Helper()
	specs := make([]seedSpec, n)
	for i := range specs {
		specs[i] = seedSpec{userID: fmt.Sprintf("cms-%d", first+i), account: s.accounts[first+i], soleGrant: true}
	}
	return seedConnections(t, s.idp, s.ms, s.store, s.hc, specs, s.clock.Now())
}

type seedSpec struct {
	userID    string
	account   devidp.Account
	soleGrant bool
}

func seedConnections(t *testing.T, idp *devidp.Server, ms *msidentity.Client, store *tablestore.Store, hc *http.Client, specs []seedSpec, now time.Time) []*conn {
	t.Helper()
	out := make([]*conn, len(specs))
	errs := make(chan error, len(specs))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(8, len(specs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := seedOne(idp, ms, store, hc, specs[i], now)
				if err != nil {
					errs <- err
					continue
				}
				out[i] = c
			}
		}()
	}
	for i := range specs {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("seed: %v", err)
	}
	return out
}

func seedOne(idp *devidp.Server, ms *msidentity.Client, store *tablestore.Store, hc *http.Client, sp seedSpec, now time.Time) (*conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := sp.account
	verifier, state := randomString(32), randomString(16)
	loc, err := idp.SignIn(ctx, hc, ms.AuthCodeURL(state, verifier, a.UserPrincipalName), a.UserPrincipalName)
	if err != nil {
		return nil, err
	}
	q := loc.Query()
	if q.Get("state") != state || q.Get("code") == "" {
		return nil, fmt.Errorf("sign-in of %s: redirected to %s", a.UserPrincipalName, loc.Redacted())
	}
	g, err := ms.Exchange(ctx, q.Get("code"), verifier)
	if err != nil {
		return nil, fmt.Errorf("exchange for %s: %w", a.UserPrincipalName, err)
	}
	if g.RefreshToken == "" {
		return nil, fmt.Errorf("exchange for %s: no refresh token", a.UserPrincipalName)
	}
	g.Account.Email, g.Account.DisplayName = a.Mail, a.DisplayName
	last := now.Add(-25 * time.Hour)
	_, err = store.Create(ctx, connection.Connection{
		UserID: sp.userID, Status: connection.StatusConnected, Account: g.Account, Scopes: g.Scopes,
		AccessToken: g.AccessToken, RefreshToken: g.RefreshToken,
		AccessTokenExpiresAt: last.Add(time.Hour),
		ConnectedAt:          now.Add(-30 * 24 * time.Hour),
		LastRefreshedAt:      last,
		LastUsedAt:           last,
	})
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", sp.userID, err)
	}
	return &conn{userID: sp.userID, oid: a.OID, seedRT: g.RefreshToken, seedAT: g.AccessToken, account: a, soleGrant: sp.soleGrant}, nil
}

// ---- what is stored ----

// kept says which refresh token a row holds.
type kept int

const (
	keptNewest        kept = iota // the newest devidp issued for the account
	keptOlderAccepted             // an older one Microsoft still accepts (an answer was lost)
)

func (k kept) String() string {
	if k == keptNewest {
		return "the newest refresh token"
	}
	return "an older refresh token Microsoft still accepts"
}

// stored reads c's row through the product's store with the same key, not
// through the injector, and fails t unless it decrypts, is still
// connected, and holds a refresh token Microsoft accepts. It says whether
// that token is the newest devidp issued.
func (s *stack) stored(t *testing.T, c *conn) (connection.Connection, kept) {
	t.Helper()
	return storedIn(t, s.store, s.idp, c)
}

func storedIn(t *testing.T, store *tablestore.Store, idp *devidp.Server, c *conn) (connection.Connection, kept) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, err := store.Get(ctx, c.userID)
	if err != nil {
		t.Fatalf("%s: stored row does not read and decrypt: %v", c.userID, err)
	}
	if got.Status != connection.StatusConnected {
		t.Errorf("%s: status %s (last_error %v), want connected", c.userID, got.Status, got.LastError)
	}
	if got.RefreshToken == "" || got.AccessToken == "" {
		t.Fatalf("%s: stored row lost a token (access %t, refresh %t)", c.userID, got.AccessToken != "", got.RefreshToken != "")
	}
	// The newest token of the connection's own sign-in (grant). When the
	// account has no other sign-in it is also the account's newest.
	if idp.IsLatestRefreshToken(got.RefreshToken) {
		if latest, _ := idp.LatestRefreshToken(c.oid); c.soleGrant && latest != got.RefreshToken {
			t.Fatalf("%s: devidp disagrees with itself about the newest refresh token", c.userID)
		}
		return got, keptNewest
	}
	if !idp.IsRefreshTokenAccepted(got.RefreshToken) {
		t.Fatalf("%s: the stored refresh token is neither the newest nor one Microsoft accepts: the connection is lost", c.userID)
	}
	return got, keptOlderAccepted
}

// expectKept fails t unless c's row holds want.
func (s *stack) expectKept(t *testing.T, c *conn, want kept) connection.Connection {
	t.Helper()
	got, k := s.stored(t, c)
	if k != want {
		t.Errorf("%s: row holds %s, want %s", c.userID, k, want)
	}
	return got
}

// ---- the CMS and the host ----

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, r.body)
	}
	return m
}

// code is the contract's error code ("" for a success body).
func (r response) code() string {
	var m struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(r.body, &m)
	return m.Error
}

func (s *stack) do(t *testing.T, method, path string, header http.Header, body []byte) response {
	t.Helper()
	return doAt(t, s.hc, s.url, s.cmsKey, method, path, header, body)
}

func doAt(t *testing.T, hc *http.Client, base, key, method, path string, header http.Header, body []byte) response {
	t.Helper()
	req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", method, path, err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

func (s *stack) token(t *testing.T, userID string) response {
	t.Helper()
	return s.do(t, http.MethodPost, "/api/connections/"+url.PathEscape(userID)+"/token", nil, nil)
}

// status is the connection's contract status as the CMS sees it.
func (s *stack) status(t *testing.T, userID string) string {
	t.Helper()
	r := s.do(t, http.MethodGet, "/api/connections/"+url.PathEscape(userID), nil, nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET connection %s: %d %s", userID, r.status, r.body)
	}
	st, _ := r.json(t)["status"].(string)
	return st
}

// wantToken fails t unless the token API answered 200 with an access token.
func wantToken(t *testing.T, r response) string {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("token API: %d %s, want 200", r.status, r.body)
	}
	at, _ := r.json(t)["access_token"].(string)
	if at == "" {
		t.Fatalf("token API: 200 without access_token: %s", r.body)
	}
	return at
}

// wantError fails t unless r is the contract error status/code.
func wantError(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.status != status || r.code() != code {
		t.Fatalf("got %d %s, want %d %s", r.status, r.body, status, code)
	}
}

// summary is the timer's ReturnValue (contract: Timer).
type summary struct {
	Due               int64 `json:"due"`
	Refreshed         int64 `json:"refreshed"`
	ReconnectRequired int64 `json:"reconnect_required"`
	TransientFailures int64 `json:"transient_failures"`
	Skipped           int64 `json:"skipped"`
}

func (s summary) String() string {
	return fmt.Sprintf("due=%d refreshed=%d reconnect_required=%d transient_failures=%d skipped=%d",
		s.Due, s.Refreshed, s.ReconnectRequired, s.TransientFailures, s.Skipped)
}

// timerRequest is the host's invocation body for the timer (golden file).
func timerRequest(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("../funchost/testdata/timer_request.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sweep plays the Functions host firing the timer and returns the summary.
func (s *stack) sweep(t *testing.T) summary {
	t.Helper()
	return sweepAt(t, s.hc, s.url, timerRequest(t))
}

func sweepAt(t *testing.T, hc *http.Client, base string, body []byte) summary {
	t.Helper()
	h := http.Header{
		"X-Azure-Functions-Invocationid": {randomString(12)},
		"User-Agent":                     {"Azure-Functions-Host/4.1040.300.0"},
		"Content-Type":                   {"application/json"},
	}
	r := doAt(t, hc, base, "", http.MethodPost, "/refresh", h, body)
	if r.status != http.StatusOK {
		t.Fatalf("POST /refresh: %d %s", r.status, r.body)
	}
	return decodeSummary(t, r.body)
}

// decodeSummary reads the ReturnValue of the host protocol's response.
func decodeSummary(t *testing.T, body []byte) summary {
	t.Helper()
	var inv struct {
		Outputs     map[string]any `json:"Outputs"`
		ReturnValue *summary       `json:"ReturnValue"`
	}
	if err := json.Unmarshal(body, &inv); err != nil || inv.ReturnValue == nil || inv.Outputs == nil {
		t.Fatalf("POST /refresh: not an invocation response with Outputs and a ReturnValue: %v\n%s", err, body)
	}
	return *inv.ReturnValue
}

// msError is Microsoft's token endpoint error JSON.
func msError(code string, aadsts int, msg string) []byte {
	b, _ := json.Marshal(map[string]any{
		"error":             code,
		"error_description": fmt.Sprintf("AADSTS%d: %s\r\nTrace ID: 0a1b\r\nCorrelation ID: 2c3d\r\nTimestamp: 2026-11-25 23:40:00Z", aadsts, msg),
		"error_codes":       []int{aadsts},
		"timestamp":         "2026-11-25 23:40:00Z",
		"trace_id":          "0a1b", "correlation_id": "2c3d",
	})
	return b
}

// tableError is Table Storage's OData error JSON with its error code header.
func tableError(status int, code, msg string) Fault {
	b, _ := json.Marshal(map[string]any{"odata.error": map[string]any{
		"code": code, "message": map[string]string{"lang": "en-US", "value": msg},
	}})
	return Status(status, http.Header{
		"Content-Type":    {"application/json;odata=minimalmetadata;streaming=true;charset=utf-8"},
		"X-Ms-Error-Code": {code},
	}, b)
}

var jsonHeader = http.Header{"Content-Type": {"application/json; charset=utf-8"}}
