package secrets

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/rs/zerolog"
)

// DefaultTTL is how long a value read from Key Vault is used before it is
// read again (the contract's SECRETS_CACHE_TTL default).
const DefaultTTL = 5 * time.Minute

const (
	defaultFailureBackoff = 10 * time.Second
	defaultWarnEvery      = time.Minute
	defaultFetchTimeout   = 15 * time.Second
	defaultStaleWait      = 2 * time.Second
)

// KeyVaultOptions configures NewKeyVault. The zero value is production's
// defaults, with logging off.
type KeyVaultOptions struct {
	// TTL: how long a current value is used before Key Vault is read again
	// (SECRETS_CACHE_TTL). Zero means DefaultTTL.
	TTL time.Duration
	// FailureBackoff: after a failed read, how long to wait before asking
	// Key Vault again for that secret, serving the last good value (or the
	// not-configured error) meanwhile, so an outage does not make every
	// request wait on Key Vault. Zero means 10s; capped at TTL.
	FailureBackoff time.Duration
	// WarnEvery: at most one log line per secret and kind of failure in this
	// period (a change of kind is logged at once). Zero means one minute.
	WarnEvery time.Duration
	// FetchTimeout bounds one read, the SDK's retries included. Zero means
	// 15s.
	FetchTimeout time.Duration
	// StaleWait: when the TTL (or the failure backoff) is over and Key
	// Vault answered before, Get waits this long for Key Vault, then
	// answers with what it said last (the last good value, or the
	// not-configured error) while the read finishes in the background. A
	// slow or unreachable vault then costs a request at most this much per
	// secret. Zero means 2s.
	StaleWait time.Duration
	// Now is the clock, required (time.Now in production).
	Now func() time.Time
	// Transport sends the SDK's requests: the process's one *http.Client in
	// production, the fake server transport or a TLS test server's client in
	// tests. Nil means azcore's default.
	Transport policy.Transporter
	// Retry tunes the SDK's retries; the zero value is azcore's default.
	Retry policy.RetryOptions
	// Logger receives failures (warning while a last good value is
	// served, error otherwise) and recoveries; never a value.
	Logger zerolog.Logger
}

// KeyVault is the Source for Azure: secrets read with azsecrets, cached for
// the TTL, with concurrent reads of one secret sharing one request. While
// Key Vault cannot be read, the last good value keeps serving and the log
// says why; a secret never read successfully is a *NotConfiguredError.
// Named versions are immutable and cached for good. It is safe for
// concurrent use and contacts Key Vault only on the first read.
type KeyVault struct {
	client       *azsecrets.Client
	vaultURL     string
	vaultName    string
	ttl          time.Duration
	backoff      time.Duration
	warnEvery    time.Duration
	fetchTimeout time.Duration
	staleWait    time.Duration
	now          func() time.Time
	log          zerolog.Logger

	flight flight

	mu    sync.Mutex
	slots map[slotKey]*slot
}

var _ Source = (*KeyVault)(nil)

// slotKey names a cache entry: a secret's current version (version "") or
// one named version.
type slotKey struct{ name, version string }

type slot struct {
	good      Secret
	hasGood   bool
	goodAt    time.Time
	next      time.Time // no read before this (TTL, or failure backoff)
	permanent bool      // a named version: immutable, never read again
	err       *NotConfiguredError

	// Log rate limiting, per slot and kind of failure.
	failing    bool
	lastKind   string
	lastLogged time.Time
	suppressed int
}

// NewKeyVault returns a Source reading the vault at vaultURL
// (https://<name>.vault.azure.net/) with cred (the app's managed identity in
// Azure). It validates its arguments but does not contact Key Vault or the
// identity endpoint: start-up never waits on them.
func NewKeyVault(vaultURL string, cred azcore.TokenCredential, opts KeyVaultOptions) (*KeyVault, error) {
	u, err := url.Parse(vaultURL)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" || u.User != nil || u.RawQuery != "" {
		return nil, fmt.Errorf("secrets: key vault url %q: want https://<vault-name>.vault.azure.net/", vaultURL)
	}
	if cred == nil {
		return nil, errors.New("secrets: key vault: no credential")
	}
	if opts.Now == nil {
		return nil, errors.New("secrets: key vault: no clock (KeyVaultOptions.Now)")
	}
	if opts.TTL < 0 || opts.FailureBackoff < 0 || opts.WarnEvery < 0 || opts.FetchTimeout < 0 || opts.StaleWait < 0 {
		return nil, errors.New("secrets: key vault: negative duration in options")
	}
	k := &KeyVault{
		vaultURL:     vaultURL,
		vaultName:    vaultName(u),
		ttl:          orDefault(opts.TTL, DefaultTTL),
		backoff:      orDefault(opts.FailureBackoff, defaultFailureBackoff),
		warnEvery:    orDefault(opts.WarnEvery, defaultWarnEvery),
		fetchTimeout: orDefault(opts.FetchTimeout, defaultFetchTimeout),
		staleWait:    orDefault(opts.StaleWait, defaultStaleWait),
		now:          opts.Now,
		log:          opts.Logger,
		slots:        map[slotKey]*slot{},
	}
	k.backoff = min(k.backoff, k.ttl)
	client, err := azsecrets.NewClient(vaultURL, identityCredential{cred}, &azsecrets.ClientOptions{
		ClientOptions: azcore.ClientOptions{
			Transport: opts.Transport,
			Retry:     opts.Retry,
			Telemetry: policy.TelemetryOptions{ApplicationID: "megdocs-msconnector"},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("secrets: key vault client: %w", err)
	}
	k.client = client
	return k, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// vaultName is what `az keyvault ... --vault-name` wants: the first label
// of the vault's host.
func vaultName(u *url.URL) string {
	host := u.Hostname()
	if net.ParseIP(host) != nil {
		return host
	}
	name, _, _ := strings.Cut(host, ".")
	return name
}

// errEmptyValue: Key Vault answered without a value. Treated like any other
// failed read (an empty client secret or key is never usable).
var errEmptyValue = errors.New("secrets: key vault returned an empty value")

// identityCredential marks the credential's failures so they can be told
// from Key Vault's own answers: "no managed identity" needs another fix than
// "no role assignment".
type identityCredential struct{ cred azcore.TokenCredential }

// GetToken marks the inner credential's failures as identityError.
func (c identityCredential) GetToken(ctx context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	tok, err := c.cred.GetToken(ctx, opts)
	if err != nil {
		return tok, &identityError{err: err}
	}
	return tok, nil
}

type identityError struct{ err error }

func (e *identityError) Error() string { return "secrets: identity: " + e.err.Error() }
func (e *identityError) Unwrap() error { return e.err }

// ErrInvalidName: a secret name or version Key Vault cannot hold. A
// programming error, not a configuration one.
var ErrInvalidName = errors.New("invalid secret name or version")

// checkName enforces Key Vault's secret names: 1-127 of [0-9a-zA-Z-].
func checkName(name string) error {
	if name == "" || len(name) > 127 || strings.TrimLeft(name, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-") != "" {
		return fmt.Errorf("secrets: %w: name %q", ErrInvalidName, name)
	}
	return nil
}

// checkVersion accepts what can name a version: Key Vault's 32 hex
// characters, or the environment's "env..." versions.
func checkVersion(version string) error {
	if version == "" || len(version) > 64 || strings.TrimLeft(version, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
		return fmt.Errorf("secrets: %w: version %q", ErrInvalidName, version)
	}
	return nil
}
