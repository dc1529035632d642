package faulttest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/megdocs/msconnector/handler/internal/sealing"
)

// The Key Vault stand-in answers for a real vault host name: the handler's
// transport dials it on 127.0.0.1 and trusts the stand-in's certificate
// for that name. So the SDK's check that the vault host ends with the
// challenge resource's host (.vault.azure.net) runs as in production, and
// no test-only option (DisableChallengeResourceVerification) is needed in
// the app's wiring.
const (
	vaultHost   = "megdocs-fault.vault.azure.net"
	vaultURL    = "https://" + vaultHost
	vaultToken  = "static-test-token-for-key-vault"
	keyVersion1 = "0123456789abcdef0123456789abcdef"
)

// vaultStandIn speaks the part of Key Vault's REST protocol the connector
// uses: the 401 bearer challenge for a request without a token, then
// GET /secrets/{name}/{version}?api-version=... with the token.
type vaultStandIn struct {
	srv  *httptest.Server
	addr string // 127.0.0.1:port
	cert *x509.Certificate

	mu       sync.Mutex
	versions map[string]map[string]string
	current  map[string]string
	reads    map[string]int   // authorized reads per secret name
	exp      map[string]int64 // "name/version" -> attributes.exp (unix seconds)
	problems []string
}

func newVaultStandIn(t *testing.T) *vaultStandIn {
	t.Helper()
	v := &vaultStandIn{versions: map[string]map[string]string{}, current: map[string]string{}, reads: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /secrets/{name}/{version...}", v.getSecret)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		v.problem("unexpected request " + r.Method + " " + r.URL.Path)
		http.NotFound(w, r)
	})
	cert, leaf := selfSigned(t, vaultHost)
	v.cert = leaf
	v.srv = httptest.NewUnstartedServer(mux)
	v.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	v.srv.StartTLS()
	v.addr = v.srv.Listener.Addr().String()
	t.Cleanup(v.srv.Close)
	t.Cleanup(func() {
		v.mu.Lock()
		defer v.mu.Unlock()
		for _, p := range v.problems {
			t.Errorf("key vault stand-in: %s", p)
		}
	})
	return v
}

func (v *vaultStandIn) clientTLS() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(v.cert)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

func (v *vaultStandIn) problem(p string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.problems = append(v.problems, p)
}

// put adds a version of name and makes it current ("" picks a new one).
func (v *vaultStandIn) put(name, version, value string) {
	if version == "" {
		version = randomHex(16)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.versions[name] == nil {
		v.versions[name] = map[string]string{}
	}
	v.versions[name][version] = value
	v.current[name] = version
}

// readCount is the number of authorized reads of name.
func (v *vaultStandIn) readCount(name string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.reads[name]
}

func (v *vaultStandIn) getSecret(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("api-version") == "" {
		v.problem("request without api-version: " + r.URL.String())
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		w.Header().Set("WWW-Authenticate", `Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", resource="https://vault.azure.net"`)
		writeKVError(w, http.StatusUnauthorized, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
		return
	}
	if auth != "Bearer "+vaultToken {
		v.problem(fmt.Sprintf("Authorization = %q", auth))
		writeKVError(w, http.StatusUnauthorized, "Unauthorized", "AKV10032: Invalid issuer.")
		return
	}
	name, version := r.PathValue("name"), r.PathValue("version")
	v.mu.Lock()
	v.reads[name]++
	if version == "" {
		version = v.current[name]
	}
	value, ok := v.versions[name][version]
	attrs := map[string]any{"enabled": true, "created": 1764000000, "updated": 1764000000, "recoveryLevel": "Recoverable+Purgeable"}
	if exp, set := v.exp[name+"/"+version]; set {
		attrs["exp"] = exp
	}
	v.mu.Unlock()
	if !ok {
		writeKVError(w, http.StatusNotFound, "SecretNotFound", fmt.Sprintf("A secret with (name/id) %s was not found in this key vault.", name))
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"value":      value,
		"id":         vaultURL + "/secrets/" + name + "/" + version,
		"attributes": attrs,
	})
}

func writeKVError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// kvError is what Key Vault answers a refused or missing read.
func kvError(status int, code, msg string) Fault {
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	return Status(status, jsonHeader, b)
}

// selfSigned makes a certificate for host that is its own CA.
func selfSigned(t *testing.T, host string) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: host},
		DNSNames:              []string{host},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
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
func (v *vaultStandIn) expires(name string, at time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.exp == nil {
		v.exp = map[string]int64{}
	}
	v.exp[name+"/"+v.current[name]] = at.Unix()
}
