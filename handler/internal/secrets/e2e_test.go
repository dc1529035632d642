package secrets

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/megdocs/msconnector/handler/internal/clocktest"
	"github.com/megdocs/msconnector/handler/internal/kvtest"
)

// vaultStandIn is the shared Key Vault stand-in (kvtest) over HTTPS, for a
// vault host name under .vault.azure.net: the SDK's challenge check runs as
// in production. srv keeps the names these tests use.
type vaultStandIn struct {
	*kvtest.Vault
	srv struct {
		URL   string
		Close func()
	}
}

func newVaultStandIn(t *testing.T) *vaultStandIn {
	t.Helper()
	v := &vaultStandIn{Vault: kvtest.New(t, "megdocs-e2e.vault.azure.net", identityToken).Start(t)}
	v.srv.URL, v.srv.Close = v.URL, v.Close
	return v
}

func (v *vaultStandIn) put(name, version, value string, exp time.Time) {
	v.Put(name, version, value, exp)
}

// force answers status for every read of name; 0 ends it.
func (v *vaultStandIn) force(name string, status int) {
	switch status {
	case 0:
		v.Clear(name)
	case http.StatusForbidden:
		v.Fail(name, kvtest.Failure{Status: status, Code: "Forbidden"})
	default:
		v.Fail(name, kvtest.Failure{Status: status, Code: "Error"})
	}
}

func (v *vaultStandIn) seen() (challenges int, reads []string) { return v.Seen() }

// newE2E builds a KeyVault exactly as production does (managed identity
// credential, the SDK's challenge policy and pipeline) against the stand-ins.
func newE2E(t *testing.T, v *vaultStandIn, c *clocktest.Clock, logs *logBuffer) *KeyVault {
	t.Helper()
	cred, err := azidentity.NewManagedIdentityCredential(nil)
	if err != nil {
		t.Fatalf("managed identity credential: %v", err)
	}
	kv, err := NewKeyVault(v.URL, cred, KeyVaultOptions{
		Now:       c.Now,
		Transport: v.Client(),
		Retry:     policy.RetryOptions{MaxRetries: 1, RetryDelay: 10 * time.Millisecond},
		Logger:    logs.logger(),
	})
	if err != nil {
		t.Fatalf("NewKeyVault: %v", err)
	}
	return kv
}

func assertIdentityUsedCorrectly(t *testing.T) {
	t.Helper()
	identity.mu.Lock()
	defer identity.mu.Unlock()
	if identity.requests == 0 {
		t.Error("the managed identity endpoint was never asked for a token")
	}
	for _, p := range identity.problems {
		t.Errorf("identity stand-in: %s", p)
	}
	for _, r := range identity.resources {
		if r != vaultResource {
			t.Errorf("token asked for resource %q, want %q", r, vaultResource)
		}
	}
}

func TestKeyVaultEndToEnd(t *testing.T) {
	v := newVaultStandIn(t)
	exp := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	v.put(ClientSecret, ver1, "e2e-client-secret", exp)
	v.put(CMSAPIKey, ver1, "e2e-cms-key", time.Time{})
	logs := &logBuffer{}
	t.Cleanup(func() { logs.assertNoValues(t, "e2e-client-secret", "e2e-cms-key") })
	c := newClock()

	kv := newE2E(t, v, c, logs)
	if ch, reads := v.seen(); ch != 0 || len(reads) != 0 {
		t.Fatalf("construction contacted Key Vault (%d challenges, reads %v)", ch, reads)
	}

	s, err := kv.Get(context.Background(), ClientSecret)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if s.Value != "e2e-client-secret" || s.Version != ver1 || !s.Expires.Equal(exp) {
		t.Errorf("Get = %s (value ok %t), want version %s expiring %s", s, s.Value == "e2e-client-secret", ver1, exp)
	}
	challenges, reads := v.seen()
	if challenges != 1 {
		t.Errorf("%d challenge round trips, want 1 (the SDK learns the authority once)", challenges)
	}
	if want := []string{"/secrets/" + ClientSecret + "/"}; fmt.Sprint(reads) != fmt.Sprint(want) {
		t.Errorf("authorized reads %v, want %v", reads, want)
	}
	assertIdentityUsedCorrectly(t)

	// Cached: no request. Another secret: straight in with the token.
	if _, err := kv.Get(context.Background(), ClientSecret); err != nil {
		t.Fatal(err)
	}
	if s, err := kv.Get(context.Background(), CMSAPIKey); err != nil || s.Value != "e2e-cms-key" || !s.Expires.IsZero() {
		t.Fatalf("Get(cms-api-key) = %s, %v", s, err)
	}
	challenges, reads = v.seen()
	if challenges != 1 || len(reads) != 2 {
		t.Errorf("after two more Gets: %d challenges, reads %v; want 1 and two reads", challenges, reads)
	}

	// Rotation in the vault is seen after the TTL, without a restart.
	v.put(ClientSecret, ver2, "e2e-client-secret-2", time.Time{})
	c.Advance(DefaultTTL)
	if s, err := kv.Get(context.Background(), ClientSecret); err != nil || s.Version != ver2 || s.Value != "e2e-client-secret-2" {
		t.Errorf("after the TTL: %s, %v; want version %s", s, err, ver2)
	}
	logs.assertNoValues(t, "e2e-client-secret-2")
}

func TestKeyVaultEndToEndFailures(t *testing.T) {
	v := newVaultStandIn(t)
	v.put(ClientSecret, ver1, "e2e-client-secret", time.Time{})
	logs := &logBuffer{}
	t.Cleanup(func() { logs.assertNoValues(t, "e2e-client-secret") })
	c := newClock()
	kv := newE2E(t, v, c, logs)
	ctx := context.Background()

	// Never read and missing: not configured, with the command to fix it.
	_, err := kv.Get(ctx, WebhookSecret)
	var nc *NotConfiguredError
	if !errors.As(err, &nc) || !strings.Contains(nc.Reason, "az keyvault secret set") || !strings.Contains(nc.Reason, v.srv.URL) {
		t.Errorf("missing secret: err = %v, want not configured with the az command and the vault", err)
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusNotFound || re.ErrorCode != "SecretNotFound" {
		t.Errorf("missing secret: the 404 SecretNotFound answer is not unwrappable from %v", err)
	}

	// Never read and forbidden: not configured, naming the role.
	v.force(CMSAPIKey, http.StatusForbidden)
	_, err = kv.Get(ctx, CMSAPIKey)
	if !errors.As(err, &nc) || nc.Name != CMSAPIKey || !strings.Contains(nc.Reason, "Key Vault Secrets User") {
		t.Errorf("forbidden secret: err = %v, want not configured naming the role", err)
	}

	// Read once, then forbidden (role removed): the last good value, a warning.
	if _, err := kv.Get(ctx, ClientSecret); err != nil {
		t.Fatal(err)
	}
	v.force(ClientSecret, http.StatusForbidden)
	c.Advance(DefaultTTL)
	if s, err := kv.Get(ctx, ClientSecret); err != nil || s.Value != "e2e-client-secret" {
		t.Errorf("forbidden after a good read: %s, %v; want the last good value", s, err)
	}
	var warned bool
	for _, l := range logs.StrictEvents(t, "secret_unavailable") {
		if field(l, "secret") == ClientSecret && field(l, "level") == "warn" && field(l, "reason") == "forbidden" && field(l, "vault") == v.srv.URL {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no forbidden warning for %s in %s", ClientSecret, logs)
	}

	// Vault gone (network error), with the SDK retrying once: still served.
	v.force(ClientSecret, 0)
	v.srv.Close()
	c.Advance(DefaultTTL)
	if s, err := kv.Get(ctx, ClientSecret); err != nil || s.Value != "e2e-client-secret" {
		t.Errorf("vault unreachable: %s, %v; want the last good value", s, err)
	}
	var unreachable bool
	for _, l := range logs.StrictEvents(t, "secret_unavailable") {
		if field(l, "reason") == "unreachable" && field(l, "level") == "warn" {
			unreachable = true
		}
	}
	if !unreachable {
		t.Errorf("no unreachable warning in %s", logs)
	}
}
