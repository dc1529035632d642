package msidentity

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// ClientCredential authenticates the connector (the confidential client) to
// the token endpoint. Implementations must be safe for concurrent use.
type ClientCredential interface {
	// Apply adds the credential's parameters to a token request body:
	// client_secret, or client_assertion_type and client_assertion. They go
	// in the body, never in an Authorization header.
	Apply(ctx context.Context, form url.Values) error
	// Renew drops whatever the credential has cached and fetches it
	// again, so the next Apply sends the newest one. The Client calls it
	// when Microsoft answers invalid_client (a rotated secret, a stale
	// assertion) and then retries that request once.
	Renew(ctx context.Context) error
}

// ClientSecretName is the Key Vault secret (and the secrets package's name)
// holding the app registration's client secret.
const ClientSecretName = "microsoft-client-secret"

// SecretSource is the part of the secrets package SecretCredential needs.
// Get may serve a cached value; Reload must bypass every cache and make the
// value it returns the one later Gets return.
type SecretSource interface {
	Get(ctx context.Context, name string) (string, error)
	Reload(ctx context.Context, name string) (string, error)
}

// SecretFunc adapts a function to SecretSource: reload is false for Get and
// true for Reload. Wiring the secrets package is then one closure:
//
//	msidentity.SecretFunc(func(ctx context.Context, name string, reload bool) (string, error) {
//		read := src.Get
//		if reload {
//			read = src.Reload
//		}
//		s, err := read(ctx, name)
//		return s.Value, err
//	})
type SecretFunc func(ctx context.Context, name string, reload bool) (string, error)

// Get reads the possibly cached value.
func (f SecretFunc) Get(ctx context.Context, name string) (string, error) { return f(ctx, name, false) }

// Reload reads the value bypassing caches.
func (f SecretFunc) Reload(ctx context.Context, name string) (string, error) {
	return f(ctx, name, true)
}

// SecretCredential sends the client secret (MICROSOFT_CLIENT_AUTH=secret).
// It caches nothing itself: the secrets package owns the TTL cache, so a
// secret rotated in Key Vault takes effect within SECRETS_CACHE_TTL, and at
// once after invalid_client through Renew.
type SecretCredential struct {
	src  SecretSource
	name string
}

// NewSecretCredential reads ClientSecretName from src.
func NewSecretCredential(src SecretSource) *SecretCredential {
	return &SecretCredential{src: src, name: ClientSecretName}
}

// Apply sets client_secret. Errors from src are wrapped with %w so the
// secrets package's not-configured error stays visible to errors.Is.
func (c *SecretCredential) Apply(ctx context.Context, form url.Values) error {
	v, err := c.src.Get(ctx, c.name)
	if err != nil {
		return fmt.Errorf("msidentity: client secret: %w", err)
	}
	if v == "" {
		return fmt.Errorf("msidentity: client secret %s is empty", c.name)
	}
	form.Set("client_secret", v)
	return nil
}

// Renew re-reads the secret from its store, bypassing the cache.
func (c *SecretCredential) Renew(ctx context.Context) error {
	if _, err := c.src.Reload(ctx, c.name); err != nil {
		return fmt.Errorf("msidentity: reload client secret: %w", err)
	}
	return nil
}

// Managed-identity assertion constants (workload identity federation).
const (
	// AssertionScope asks a managed identity for a token Microsoft accepts
	// as a client assertion for an app whose federated identity credential
	// names that identity.
	AssertionScope = "api://AzureADTokenExchange/.default"
	// AssertionType is RFC 7523's client_assertion_type for a JWT.
	AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// assertionEarly: an assertion is replaced this long before it expires,
	// so one never expires between Apply and Microsoft reading it.
	assertionEarly = 5 * time.Minute
)

// AssertionCredential sends a managed identity's token as the client
// assertion (MICROSOFT_CLIENT_AUTH=managed_identity): no client secret
// exists anywhere. The token comes from an azcore.TokenCredential
// (azidentity's ManagedIdentityCredential in production) for AssertionScope
// and is cached until assertionEarly before it expires.
type AssertionCredential struct {
	tc  azcore.TokenCredential
	now func() time.Time

	// lock is a mutex a waiter can give up on when its context ends.
	lock chan struct{}
	tok  azcore.AccessToken
}

// NewAssertionCredential uses tc for assertions; now is the clock, and it
// panics without one (a missing clock is a wiring bug, not a runtime state).
func NewAssertionCredential(tc azcore.TokenCredential, now func() time.Time) *AssertionCredential {
	if now == nil {
		panic("msidentity: NewAssertionCredential needs a clock")
	}
	return &AssertionCredential{tc: tc, now: now, lock: make(chan struct{}, 1)}
}

// NewManagedIdentityCredential builds an AssertionCredential over
// azidentity's ManagedIdentityCredential, which finds the App Service /
// Functions identity endpoint through IDENTITY_ENDPOINT and IDENTITY_HEADER.
// clientID names a user-assigned identity (AZURE_CLIENT_ID); empty means the
// system-assigned one. hc carries the requests (the one client with
// timeouts); nil uses the SDK's default.
func NewManagedIdentityCredential(clientID string, hc *http.Client, now func() time.Time) (*AssertionCredential, error) {
	if now == nil {
		return nil, errors.New("msidentity: managed identity: a clock is required")
	}
	opts := &azidentity.ManagedIdentityCredentialOptions{}
	if clientID != "" {
		opts.ID = azidentity.ClientID(clientID)
	}
	if hc != nil {
		opts.ClientOptions.Transport = hc
	}
	mi, err := azidentity.NewManagedIdentityCredential(opts)
	if err != nil {
		return nil, fmt.Errorf("msidentity: managed identity: %w", err)
	}
	return NewAssertionCredential(mi, now), nil
}

// Apply sets client_assertion_type and client_assertion, fetching a token
// when none is cached or the cached one is about to expire.
func (c *AssertionCredential) Apply(ctx context.Context, form url.Values) error {
	if err := c.acquire(ctx); err != nil {
		return err
	}
	defer c.release()
	if c.tok.Token == "" || !c.now().Add(assertionEarly).Before(c.tok.ExpiresOn) {
		if err := c.fetch(ctx, false); err != nil {
			return err
		}
	}
	form.Set("client_assertion_type", AssertionType)
	form.Set("client_assertion", c.tok.Token)
	return nil
}

// Renew fetches a new assertion, bypassing every cache.
//
// azidentity's managed identity credential keeps its tokens in MSAL's
// process-wide cache, so asking again would return the same stale token.
// A non-empty TokenRequestOptions.Claims is the SDK's documented way past
// that cache: azidentity passes it to MSAL as WithClaims, and MSAL's
// managed identity client (msal-go v1.10.1, apps/managedidentity
// AcquireToken) skips its cache whenever claims are set. The App Service
// identity protocol has no claims parameter, so the value only forces the
// fetch; MSAL then caches the new token for every later plain request.
func (c *AssertionCredential) Renew(ctx context.Context) error {
	if err := c.acquire(ctx); err != nil {
		return err
	}
	defer c.release()
	return c.fetch(ctx, true)
}

func (c *AssertionCredential) fetch(ctx context.Context, fresh bool) error {
	opts := policy.TokenRequestOptions{Scopes: []string{AssertionScope}}
	if fresh {
		// A claims request (OpenID Connect Core 5.5) asking for a token
		// issued no earlier than now: truthful, and non-empty.
		opts.Claims = `{"access_token":{"nbf":{"essential":true,"value":"` + strconv.FormatInt(c.now().Unix(), 10) + `"}}}`
	}
	tok, err := c.tc.GetToken(ctx, opts)
	if err != nil {
		return fmt.Errorf("msidentity: managed identity assertion: %w", err)
	}
	if tok.Token == "" {
		return errors.New("msidentity: managed identity assertion: empty token")
	}
	c.tok = tok
	return nil
}

func (c *AssertionCredential) acquire(ctx context.Context) error {
	select {
	case c.lock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("msidentity: managed identity assertion: %w", ctx.Err())
	}
}

func (c *AssertionCredential) release() { <-c.lock }

var (
	_ ClientCredential = (*SecretCredential)(nil)
	_ ClientCredential = (*AssertionCredential)(nil)
	_ SecretSource     = SecretFunc(nil)
)
