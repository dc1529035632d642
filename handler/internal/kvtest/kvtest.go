// Package kvtest is the one Key Vault stand-in of the tests: secrets with
// versions, expiries, forced failures and a read log, served two ways from
// the same state.
//
//   - Over HTTPS (Start): the part of Key Vault's REST protocol the
//     connector uses, the 401 bearer challenge for a request without a
//     token, then GET /secrets/{name}/{version}?api-version=... with it. The
//     server answers for a real vault host name (*.vault.azure.net): Client
//     dials that name on 127.0.0.1 and trusts the stand-in's certificate, so
//     the SDK's check that the vault host ends with the challenge's resource
//     runs as in production and no test-only option is needed.
//   - In process (FakeServer): the SDK's own azsecrets/fake server over the
//     same state, for unit tests that hold reads (OnRead) or inject a
//     network error.
//
// Test support only: imported by _test.go files, never by the product.
package kvtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azfake "github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets/fake"
)

// Scope is what a Key Vault token is asked for.
const Scope = "https://vault.azure.net/.default"

// Failure is a forced answer for one secret: an HTTP status with Key
// Vault's error code, or (in process only) a transport error.
type Failure struct {
	Status int
	Code   string
	NetErr error
}

type version struct {
	value string
	exp   int64 // unix seconds; 0: none
}

// Vault is the stand-in's state. Its methods are safe for concurrent use.
type Vault struct {
	// Host is the vault's host name and URL its https:// URL (no trailing
	// slash).
	Host, URL string
	token     string

	srv  *httptest.Server
	cert *x509.Certificate

	mu         sync.Mutex
	versions   map[string]map[string]version
	current    map[string]string
	fail       map[string]Failure
	challenges int      // requests without Authorization
	reads      []string // authorized reads, "/secrets/{name}/{version}" as asked
	problems   []string
	onRead     func(ctx context.Context) error // in-process reads only
}

// New returns an empty vault named host (for example
// "megdocs-test.vault.azure.net") that accepts token as the bearer token.
// It serves nothing until Start; problems it sees (a request without
// api-version, a wrong token, an unexpected path) fail t at cleanup.
func New(t testing.TB, host, token string) *Vault {
	t.Helper()
	v := &Vault{Host: host, URL: "https://" + host, token: token,
		versions: map[string]map[string]version{}, current: map[string]string{}, fail: map[string]Failure{}}
	t.Cleanup(func() {
		v.mu.Lock()
		defer v.mu.Unlock()
		for _, p := range v.problems {
			t.Errorf("key vault stand-in: %s", p)
		}
	})
	return v
}

// Start serves the vault over HTTPS on 127.0.0.1 until the test ends.
func (v *Vault) Start(t testing.TB) *Vault {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /secrets/{name}/{version...}", v.getSecret)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		v.problem("unexpected request " + r.Method + " " + r.URL.Path)
		http.NotFound(w, r)
	})
	cert := selfSigned(t, v.Host)
	v.cert = cert.Leaf
	v.srv = httptest.NewUnstartedServer(mux)
	v.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	v.srv.StartTLS()
	t.Cleanup(v.srv.Close)
	return v
}

// Close stops the server: the vault becomes unreachable.
func (v *Vault) Close() { v.srv.Close() }

// Addr is the started server's 127.0.0.1:port.
func (v *Vault) Addr() string { return v.srv.Listener.Addr().String() }

// TLSConfig trusts the stand-in's certificate only.
func (v *Vault) TLSConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(v.cert)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// Client is an *http.Client that reaches the vault's host name on the
// stand-in and trusts its certificate; it dials nothing else.
func (v *Vault) Client() *http.Client {
	var d net.Dialer
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: v.TLSConfig(),
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr != v.Host+":443" {
				return nil, fmt.Errorf("kvtest: refusing to dial %s", addr)
			}
			return d.DialContext(ctx, network, v.Addr())
		},
	}}
}

// Credential is a static credential handing out the vault's token, for
// tests whose point is what Key Vault answers rather than the identity.
func (v *Vault) Credential() azcore.TokenCredential { return credential{v.token} }

type credential struct{ token string }

func (c credential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if len(o.Scopes) != 1 || o.Scopes[0] != Scope {
		return azcore.AccessToken{}, fmt.Errorf("token asked for scopes %v, want Key Vault's", o.Scopes)
	}
	return azcore.AccessToken{Token: c.token, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// Put adds a version of name and makes it current; version "" picks a new
// 32-hex one, exp zero sets no expiry. It returns the version.
func (v *Vault) Put(name, ver, value string, exp time.Time) string {
	if ver == "" {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		ver = hex.EncodeToString(b)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.versions[name] == nil {
		v.versions[name] = map[string]version{}
	}
	sv := version{value: value}
	if !exp.IsZero() {
		sv.exp = exp.Unix()
	}
	v.versions[name][ver] = sv
	v.current[name] = ver
	return ver
}

// Expires sets the current version's expiry (attributes.exp), as an admin
// setting an expiration date does.
func (v *Vault) Expires(name string, at time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	cur := v.current[name]
	sv := v.versions[name][cur]
	sv.exp = at.Unix()
	v.versions[name][cur] = sv
}

// Remove deletes every version of name, as deleting the secret does.
func (v *Vault) Remove(name string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.versions, name)
	delete(v.current, name)
}

// Value is the current value of name.
func (v *Vault) Value(name string) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.versions[name][v.current[name]].value
}

// Current is the current version of name.
func (v *Vault) Current(name string) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.current[name]
}

// Values is every value the vault holds, for checking that none is logged.
func (v *Vault) Values() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []string
	for _, vs := range v.versions {
		for _, sv := range vs {
			out = append(out, sv.value)
		}
	}
	return out
}

// Fail forces every read of name to fail with f until Clear.
func (v *Vault) Fail(name string, f Failure) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.fail[name] = f
}

// Clear ends a forced failure.
func (v *Vault) Clear(name string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.fail, name)
}

// Seen returns the requests without a token (challenges) and the
// authorized reads, as request paths: "/secrets/{name}/{version}", the
// version empty for the current one.
func (v *Vault) Seen() (challenges int, reads []string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.challenges, append([]string(nil), v.reads...)
}

// ReadCount is the number of authorized reads of name; "" counts all.
func (v *Vault) ReadCount(name string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for _, r := range v.reads {
		if name == "" || strings.HasPrefix(r, "/secrets/"+name+"/") {
			n++
		}
	}
	return n
}

// OnRead sets a hook that runs before each in-process read (FakeServer)
// with the request's context; an error fails the read. Tests hold reads at
// a gate with it.
func (v *Vault) OnRead(hook func(ctx context.Context) error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.onRead = hook
}

func (v *Vault) problem(p string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.problems = append(v.problems, p)
}

// lookup records an authorized read and answers it: the secret, or the
// forced failure, or 404.
func (v *Vault) lookup(name, ver string) (azsecrets.Secret, Failure, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.reads = append(v.reads, "/secrets/"+name+"/"+ver)
	if f, ok := v.fail[name]; ok {
		return azsecrets.Secret{}, f, false
	}
	if ver == "" {
		ver = v.current[name]
	}
	sv, ok := v.versions[name][ver]
	if !ok {
		return azsecrets.Secret{}, Failure{Status: http.StatusNotFound, Code: "SecretNotFound"}, false
	}
	id := azsecrets.ID(v.URL + "/secrets/" + name + "/" + ver)
	value := sv.value
	enabled := true
	s := azsecrets.Secret{ID: &id, Value: &value, Attributes: &azsecrets.SecretAttributes{Enabled: &enabled}}
	if sv.exp != 0 {
		exp := time.Unix(sv.exp, 0).UTC()
		s.Attributes.Expires = &exp
	}
	return s, Failure{}, true
}

func (v *Vault) getSecret(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("api-version") == "" {
		v.problem("request without api-version: " + r.URL.String())
	}
	switch auth := r.Header.Get("Authorization"); auth {
	case "":
		v.mu.Lock()
		v.challenges++
		v.mu.Unlock()
		w.Header().Set("WWW-Authenticate", `Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", resource="https://vault.azure.net"`)
		WriteError(w, http.StatusUnauthorized, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
		return
	case "Bearer " + v.token:
	default:
		v.problem(fmt.Sprintf("Authorization = %q", auth))
		WriteError(w, http.StatusUnauthorized, "Unauthorized", "AKV10032: Invalid issuer.")
		return
	}
	name := r.PathValue("name")
	s, f, ok := v.lookup(name, r.PathValue("version"))
	if !ok {
		WriteError(w, f.Status, f.Code, message(name, f))
		return
	}
	attrs := map[string]any{"enabled": true, "created": 1764000000, "updated": 1764000000, "recoveryLevel": "Recoverable+Purgeable"}
	if s.Attributes.Expires != nil {
		attrs["exp"] = s.Attributes.Expires.Unix()
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(map[string]any{"value": *s.Value, "id": string(*s.ID), "attributes": attrs})
}

// message is what Key Vault says with a status.
func message(name string, f Failure) string {
	switch f.Status {
	case http.StatusNotFound:
		return fmt.Sprintf("A secret with (name/id) %s was not found in this key vault.", name)
	case http.StatusForbidden:
		return "Caller is not authorized to perform action on resource. Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'"
	}
	return "forced"
}

// ErrorBody is Key Vault's JSON error document.
func ErrorBody(code, msg string) []byte {
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	return b
}

// WriteError answers as Key Vault does when it refuses or fails a request.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(append(ErrorBody(code, msg), '\n'))
}

// FakeServer is the SDK's in-process fake over this vault's state: pass
// fake.NewServerTransport(v.FakeServer()) as the client's transport.
func (v *Vault) FakeServer() *fake.Server {
	return &fake.Server{GetSecret: v.fakeGetSecret}
}

func (v *Vault) fakeGetSecret(ctx context.Context, name, ver string, _ *azsecrets.GetSecretOptions) (resp azfake.Responder[azsecrets.GetSecretResponse], errResp azfake.ErrorResponder) {
	v.mu.Lock()
	hook := v.onRead
	v.mu.Unlock()
	if hook != nil {
		if err := hook(ctx); err != nil {
			v.mu.Lock()
			v.reads = append(v.reads, "/secrets/"+name+"/"+ver)
			v.mu.Unlock()
			errResp.SetError(err)
			return
		}
	}
	s, f, ok := v.lookup(name, ver)
	switch {
	case ok:
		resp.SetResponse(http.StatusOK, azsecrets.GetSecretResponse{Secret: s}, nil)
	case f.NetErr != nil:
		errResp.SetError(f.NetErr)
	default:
		errResp.SetResponseError(f.Status, f.Code)
	}
	return
}

// selfSigned makes a certificate for host that is its own CA.
func selfSigned(t testing.TB, host string) tls.Certificate {
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
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}
