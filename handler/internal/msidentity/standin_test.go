package msidentity

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/devidp"
)

// These tests run the Client against the local stand-in (package devidp),
// which speaks Microsoft's paths, parameters and JSON.

func startStandIn(t *testing.T, cfg devidp.Config) (*devidp.Server, string) {
	t.Helper()
	cfg.ClientID, cfg.RedirectURL = testClientID, testRedirect
	if cfg.Now == nil {
		cfg.Now = time.Now // these tests' stand-in runs on the wall clock
	}
	s, err := devidp.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	return s, hs.URL
}

func newVerifier(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// connect runs the browser part of the flow and redeems the code.
func connect(t *testing.T, idp *devidp.Server, c *Client, account string) Tokens {
	t.Helper()
	verifier := newVerifier(t)
	loc, err := idp.SignIn(context.Background(), nil, c.AuthCodeURL("state-1", verifier, account), account)
	if err != nil {
		t.Fatalf("SignIn: %v", err)
	}
	if loc.Query().Get("state") != "state-1" {
		t.Fatalf("callback %s lacks the state", loc)
	}
	tok, err := c.Exchange(context.Background(), loc.Query().Get("code"), verifier)
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	return tok
}

func TestFlowAgainstStandIn(t *testing.T) {
	idp, base := startStandIn(t, devidp.Config{ClientSecret: testSecret})
	c := newTestClient(t, base, withClock(newClock()))
	ada, alan := devidp.DefaultAccounts()[0], devidp.DefaultAccounts()[2]

	tok := connect(t, idp, c, ada.UserPrincipalName)
	if tok.Account != (connection.Account{ID: ada.OID, TenantID: ada.TenantID}) || tok.RefreshToken == "" {
		t.Fatalf("Exchange = %+v", tok)
	}
	if !idp.IsLatestRefreshToken(tok.RefreshToken) {
		t.Error("the exchange's refresh token is not the newest")
	}
	acct, err := c.Profile(context.Background(), tok.AccessToken)
	if err != nil || acct.Email != "ada@contoso.com" || acct.DisplayName != "Ada Lovelace" {
		t.Fatalf("Profile = %+v, %v", acct, err)
	}

	next, err := c.Refresh(context.Background(), tok.RefreshToken)
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if next.RefreshToken == "" || next.RefreshToken == tok.RefreshToken || !idp.IsLatestRefreshToken(next.RefreshToken) {
		t.Error("Refresh did not return the rotated refresh token")
	}

	personal := connect(t, idp, c, alan.UserPrincipalName)
	if personal.Account.TenantID != devidp.PersonalTenantID {
		t.Errorf("personal account tenant = %q", personal.Account.TenantID)
	}
	if p, err := c.Me(context.Background(), personal.AccessToken); err != nil || p.ID == personal.Account.ID || p.Email() != alan.UserPrincipalName {
		t.Errorf("Me(personal) = %+v, %v: want Graph's CID (not the oid) and the UPN as email", p, err)
	}

	if err := idp.RevokeAccount(ada.OID); err != nil {
		t.Fatal(err)
	}
	_, err = c.Refresh(context.Background(), next.RefreshToken)
	if connection.ClassOf(err) != connection.ClassReconnectRequired || connection.CodeOf(err, "") != "invalid_grant" {
		t.Fatalf("Refresh after revocation = %v, want reconnect_required invalid_grant", err)
	}

	// Code reuse and a wrong verifier are configuration errors, not the
	// user's fault.
	verifier := newVerifier(t)
	loc, err := idp.SignIn(context.Background(), nil, c.AuthCodeURL("s", verifier, ""), ada.UserPrincipalName)
	if err != nil {
		t.Fatal(err)
	}
	code := loc.Query().Get("code")
	if _, err := c.Exchange(context.Background(), code, newVerifier(t)); connection.ClassOf(err) != connection.ClassConfiguration {
		t.Errorf("Exchange with a wrong verifier = %v, want configuration", err)
	}
	if _, err := c.Exchange(context.Background(), code, verifier); err != nil {
		t.Fatalf("Exchange = %v", err)
	}
	var e *Error
	if _, err := c.Exchange(context.Background(), code, verifier); connection.ClassOf(err) != connection.ClassConfiguration || !errors.As(err, &e) || !e.HasErrorCode(54005) {
		t.Errorf("second Exchange of a code = %v, want configuration AADSTS54005", err)
	}

	// Throttling from the stand-in pauses the instance.
	idp.FailNext(1, devidp.Throttled(20*time.Second))
	before := idp.TokenRequests("refresh_token")
	if _, err := c.Refresh(context.Background(), personal.RefreshToken); connection.ClassOf(err) != connection.ClassTransient {
		t.Fatalf("throttled Refresh = %v", err)
	}
	if _, err := c.Refresh(context.Background(), personal.RefreshToken); !errors.As(err, &e) || e.Code != CodeThrottled || e.RetryAfter() != 20*time.Second {
		t.Fatalf("Refresh during the pause = %v", err)
	}
	if got := idp.TokenRequests("refresh_token") - before; got != 1 {
		t.Errorf("refresh requests reaching the stand-in = %d, want 1", got)
	}
}

// TestManagedIdentitySecretless is issue 8's proof: with no client secret
// anywhere, azidentity's real ManagedIdentityCredential fetches the
// assertion from an App Service identity endpoint (IDENTITY_ENDPOINT and
// IDENTITY_HEADER, exactly as Azure Functions sets them), the exchange and
// the refresh both authenticate with it, and a stale assertion is replaced
// after invalid_client.
//
// azidentity caches managed identity tokens for the whole process, so this
// is the only test in this package that uses a real managed identity
// credential.
func TestManagedIdentitySecretless(t *testing.T) {
	idp, base := startStandIn(t, devidp.Config{ClientSecret: "", IdentityHeader: "functions-identity-header"})
	t.Setenv("IDENTITY_ENDPOINT", base+devidp.ManagedIdentityPath)
	t.Setenv("IDENTITY_HEADER", "functions-identity-header")
	for _, other := range []string{"MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST"} {
		t.Setenv(other, "")
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	// The assertion's lifetime is measured by azidentity on the real
	// clock, so this test uses the real clock throughout.
	cred, err := NewManagedIdentityCredential("", hc, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, base, withCredential(cred), withNow(time.Now), withHTTPClient(hc))

	tok := connect(t, idp, c, "grace@contoso.com")
	if tok.Account.ID != devidp.DefaultAccounts()[1].OID {
		t.Fatalf("account = %+v", tok.Account)
	}
	next, err := c.Refresh(context.Background(), tok.RefreshToken)
	if err != nil {
		t.Fatalf("Refresh with the managed identity: %v", err)
	}
	if got := idp.ManagedIdentityRequests(); got != 1 {
		t.Errorf("identity endpoint requests = %d, want 1 (the assertion is cached across exchange and refresh)", got)
	}

	// The identity's tokens so far become stale: the cached assertion is
	// refused, renewed past azidentity's cache, and the same refresh
	// succeeds on its one retry.
	idp.InvalidateAssertions()
	refreshes := idp.TokenRequests("refresh_token")
	if _, err := c.Refresh(context.Background(), next.RefreshToken); err != nil {
		t.Fatalf("Refresh with a stale assertion: %v", err)
	}
	if got := idp.TokenRequests("refresh_token") - refreshes; got != 2 {
		t.Errorf("refresh requests = %d, want 2 (refused, then retried once)", got)
	}
	if got := idp.ManagedIdentityRequests(); got != 2 {
		t.Errorf("identity endpoint requests = %d, want 2 (one fresh assertion after invalid_client)", got)
	}
	// The renewed assertion is cached again: no further identity request.
	if _, err := c.Refresh(context.Background(), next.RefreshToken); err != nil {
		t.Fatalf("Refresh after renewal: %v", err)
	}
	if got := idp.ManagedIdentityRequests(); got != 2 {
		t.Errorf("identity endpoint requests = %d, want still 2", got)
	}
}
