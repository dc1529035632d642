package faulttest

import (
	"context"
	"crypto/tls"
	"fmt"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/megdocs/msconnector/handler/internal/kvtest"
	"github.com/megdocs/msconnector/handler/internal/sealing"
)

// The Key Vault stand-in answers for a real vault host name: the handler's
// transport dials it on 127.0.0.1 and trusts the stand-in's certificate
// for that name. So the SDK's check that the vault host ends with the
// challenge resource's host (.vault.azure.net) runs as in production: the
// product has no option to skip it.
const (
	vaultHost   = "megdocs-fault.vault.azure.net"
	vaultURL    = "https://" + vaultHost
	vaultToken  = "static-test-token-for-key-vault"
	keyVersion1 = "0123456789abcdef0123456789abcdef"
)

// vaultStandIn is the shared Key Vault stand-in (kvtest): the 401 bearer
// challenge for a request without a token, then
// GET /secrets/{name}/{version}?api-version=... with the token, over HTTPS
// for vaultHost. addr is its 127.0.0.1:port.
type vaultStandIn struct {
	*kvtest.Vault
	addr string
}

func newVaultStandIn(t *testing.T) *vaultStandIn {
	t.Helper()
	v := kvtest.New(t, vaultHost, vaultToken).Start(t)
	return &vaultStandIn{Vault: v, addr: v.Addr()}
}

func (v *vaultStandIn) clientTLS() *tls.Config { return v.TLSConfig() }

// put adds a version of name and makes it current ("" picks a new one).
func (v *vaultStandIn) put(name, version, value string) { v.Put(name, version, value, time.Time{}) }

// readCount is the number of authorized reads of name.
func (v *vaultStandIn) readCount(name string) int { return v.ReadCount(name) }

// kvError is what Key Vault answers a refused or missing read.
func kvError(status int, code, msg string) Fault {
	return Status(status, jsonHeader, kvtest.ErrorBody(code, msg))
}

// staticCredential stands in for the managed identity (app.Deps.Credential):
// the secrets package's own tests prove the real managed-identity path; here
// the point is what Key Vault answers.
type staticCredential struct{}

func (staticCredential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if len(o.Scopes) != 1 || o.Scopes[0] != "https://vault.azure.net/.default" {
		return azcore.AccessToken{}, fmt.Errorf("token asked for scopes %v, want Key Vault's", o.Scopes)
	}
	return azcore.AccessToken{Token: vaultToken, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// staticKeyring is the token-encryption-key version the stand-in holds, for
// the test's own view of the table.
type staticKeyring struct{ key sealing.Key }

func (k staticKeyring) Current(context.Context) (sealing.Key, error) { return k.key, nil }

func (k staticKeyring) Version(_ context.Context, v string) (sealing.Key, error) {
	if v != k.key.Version {
		return sealing.Key{}, fmt.Errorf("no key version %q", v)
	}
	return k.key, nil
}

// expires sets the current version's expiry (attributes.exp), as an admin
// setting an expiration date on a secret does.
func (v *vaultStandIn) expires(name string, at time.Time) { v.Expires(name, at) }
