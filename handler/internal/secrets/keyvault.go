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

// Get returns the secret's current version, from the cache while it is
// younger than the TTL. After the TTL it reads Key Vault; if that takes
// longer than StaleWait and Key Vault answered before, it answers what Key
// Vault said last (the last good value, or why the secret is not
// configured) and lets the read finish in the background.
func (k *KeyVault) Get(ctx context.Context, name string) (Secret, error) {
	if err := checkName(name); err != nil {
		return Secret{}, err
	}
	key := slotKey{name: name}
	if s, err, ok := k.cached(key); ok {
		return s, err
	}
	last, lastErr, known := k.lastKnown(key)
	if !known {
		return k.read(ctx, key)
	}
	// A secret that failed before waits no longer than one with a last
	// good value: otherwise an absent optional secret
	// (cms-api-key-previous outside a rotation) would hold every CMS
	// request for the whole FetchTimeout while Key Vault hangs.
	wait, cancel := context.WithTimeout(ctx, k.staleWait)
	defer cancel()
	s, err := k.read(wait, key)
	if err != nil && ctx.Err() == nil && wait.Err() != nil {
		// Only the wait ran out: answer what Key Vault said last.
		return last, lastErr
	}
	return s, err
}

// GetVersion returns one named version. Versions are immutable, so once read
// it is never read again.
func (k *KeyVault) GetVersion(ctx context.Context, name, version string) (Secret, error) {
	if err := checkName(name); err != nil {
		return Secret{}, err
	}
	if err := checkVersion(version); err != nil {
		return Secret{}, err
	}
	key := slotKey{name: name, version: version}
	if s, err, ok := k.cached(key); ok {
		return s, err
	}
	return k.read(ctx, key)
}

// Reload reads the current version now, whatever the cache holds (a read
// already in progress is shared). If Key Vault cannot be read, it returns
// the last good value, like Get.
func (k *KeyVault) Reload(ctx context.Context, name string) (Secret, error) {
	if err := checkName(name); err != nil {
		return Secret{}, err
	}
	return k.read(ctx, slotKey{name: name})
}

// cached answers from the cache when the slot may not be read yet: a fresh
// or immutable value, or a recent failure still backing off.
func (k *KeyVault) cached(key slotKey) (Secret, error, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	s := k.slots[key]
	if s == nil {
		return Secret{}, nil, false
	}
	if s.hasGood && (s.permanent || k.now().Before(s.next)) {
		return s.good, nil, true
	}
	if !s.hasGood && s.err != nil && k.now().Before(s.next) {
		return Secret{}, s.err, true
	}
	return Secret{}, nil, false
}

// lastKnown is what Key Vault said last about key: the last good value, or
// the not-configured error of a secret never read successfully. known is
// false before the first answer.
func (k *KeyVault) lastKnown(key slotKey) (last Secret, lastErr error, known bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch s := k.slots[key]; {
	case s == nil:
		return Secret{}, nil, false
	case s.hasGood:
		return s.good, nil, true
	case s.err != nil:
		return Secret{}, s.err, true
	}
	return Secret{}, nil, false
}

func (k *KeyVault) read(ctx context.Context, key slotKey) (Secret, error) {
	return k.flight.do(ctx, key.name+"/"+key.version, func() (Secret, error) {
		return k.fetch(ctx, key)
	})
}

// fetch reads key from Key Vault and records the outcome. It runs detached
// from the caller's cancellation: other readers may be waiting for it, and
// a value read is worth caching even if the first caller gave up.
func (k *KeyVault) fetch(ctx context.Context, key slotKey) (Secret, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.fetchTimeout)
	defer cancel()
	resp, err := k.client.GetSecret(ctx, key.name, key.version, nil)
	var s Secret
	if err == nil {
		s, err = secretFrom(key, resp.Secret)
	}
	now := k.now()
	if err != nil {
		return k.failed(key, err, now)
	}
	k.stored(key, s, now)
	return s, nil
}

func secretFrom(key slotKey, kv azsecrets.Secret) (Secret, error) {
	if kv.Value == nil || *kv.Value == "" {
		return Secret{}, errEmptyValue
	}
	s := Secret{Name: key.name, Value: *kv.Value, Version: key.version}
	if kv.ID != nil && kv.ID.Version() != "" {
		s.Version = kv.ID.Version()
	}
	if key.version != "" && s.Version != key.version {
		return Secret{}, fmt.Errorf("secrets: key vault answered version %q for version %q", s.Version, key.version)
	}
	if kv.Attributes != nil && kv.Attributes.Expires != nil {
		s.Expires = kv.Attributes.Expires.UTC()
	}
	return s, nil
}

// errEmptyValue: Key Vault answered without a value. Treated like any other
// failed read (an empty client secret or key is never usable).
var errEmptyValue = errors.New("secrets: key vault returned an empty value")

func (k *KeyVault) stored(key slotKey, s Secret, now time.Time) {
	k.mu.Lock()
	sl := k.slot(key)
	recovered := sl.failing
	*sl = slot{good: s, hasGood: true, goodAt: now}
	if key.version == "" {
		sl.next = now.Add(k.ttl)
		if s.Version != "" {
			// The current version is also that named version, forever:
			// the keyring opening rows sealed with it needs no extra read.
			*k.slot(slotKey{key.name, s.Version}) = slot{good: s, hasGood: true, goodAt: now, permanent: true}
		}
	} else {
		sl.permanent = true
	}
	k.mu.Unlock()
	if recovered {
		k.log.Info().Str("event", "secret_recovered").Str("secret", key.name).
			Str("vault", k.vaultURL).Str("version", s.Version).
			Msg("key vault secret readable again")
	}
}

// failed records a failed read. With a last good value it returns that,
// unless Key Vault said the secret no longer exists (404); otherwise a
// *NotConfiguredError saying what to fix.
func (k *KeyVault) failed(key slotKey, err error, now time.Time) (Secret, error) {
	f := k.classify(key, err)

	k.mu.Lock()
	sl := k.slot(key)
	sl.next = now.Add(k.backoff)
	changed := !sl.failing || sl.lastKind != f.kind
	sl.failing = true
	logNow := changed || now.Sub(sl.lastLogged) >= k.warnEvery
	suppressed := 0
	if logNow {
		suppressed, sl.suppressed = sl.suppressed, 0
		sl.lastLogged, sl.lastKind = now, f.kind
	} else {
		sl.suppressed++
	}
	deleted := f.kind == "not_found" && key.version == "" && sl.hasGood
	if deleted {
		// Key Vault says the secret no longer exists: an admin removed it
		// (cms-api-key-previous at the end of a rotation, say). The
		// last-good rule covers a vault that cannot be reached or refuses
		// (403), not one that answers "gone": stop serving the value.
		sl.hasGood, sl.good = false, Secret{}
		changed, logNow = true, true
	}
	good, hasGood, goodAt := sl.good, sl.hasGood, sl.goodAt
	var nc *NotConfiguredError
	if !hasGood {
		nc = &NotConfiguredError{Name: key.name, Reason: f.problem + ": " + f.fix, Err: err}
		sl.err = nc
	}
	k.mu.Unlock()

	if logNow {
		ev := k.log.Error()
		msg := "key vault secret cannot be read; it is not configured until it can"
		switch {
		case hasGood:
			ev = k.log.Warn()
			msg = "key vault secret cannot be read; serving the last good value"
		case deleted:
			msg = "key vault secret was deleted; its last value is no longer used"
			if optional(key.name) {
				ev = k.log.Info()
			}
		case f.kind == "not_found" && key.version == "" && optional(key.name):
			// Absent is the normal state of an optional secret: say so
			// once in a while, without raising an alarm.
			ev = k.log.Info()
			msg = "optional key vault secret is not set"
		}
		ev = ev.Str("event", "secret_unavailable").Str("secret", key.name).Str("vault", k.vaultURL).
			Str("reason", f.kind).Str("problem", f.problem).Str("fix", f.fix)
		if key.version != "" {
			ev = ev.Str("version", key.version)
		}
		if f.status != 0 {
			ev = ev.Int("status", f.status)
		}
		if f.code != "" {
			ev = ev.Str("error_code", f.code)
		}
		if hasGood {
			ev = ev.Str("serving", "last_good").Str("last_good_version", good.Version).
				Int64("last_good_age_s", int64(now.Sub(goodAt)/time.Second))
		}
		if suppressed > 0 {
			ev = ev.Int("suppressed", suppressed)
		}
		ev.Err(err).Msg(msg)
	}
	if hasGood {
		return good, nil
	}
	return Secret{}, nc
}

// slot returns the slot for key, creating it. Callers hold k.mu.
func (k *KeyVault) slot(key slotKey) *slot {
	s := k.slots[key]
	if s == nil {
		s = &slot{}
		k.slots[key] = s
	}
	return s
}

// failure is a failed read explained for an admin.
type failure struct {
	kind    string // stable, for the log's reason field
	status  int
	code    string
	problem string
	fix     string
}

func (k *KeyVault) classify(key slotKey, err error) failure {
	what := fmt.Sprintf("secret %s", key.name)
	if key.version != "" {
		what = fmt.Sprintf("version %s of secret %s", key.version, key.name)
	}
	var (
		re *azcore.ResponseError
		ie *identityError
	)
	switch {
	case errors.Is(err, errEmptyValue):
		return failure{kind: "empty",
			problem: fmt.Sprintf("%s in key vault %s has an empty value", what, k.vaultURL),
			fix:     k.setCommand(key.name)}
	case errors.As(err, &ie):
		return failure{kind: "identity",
			problem: fmt.Sprintf("the app's identity could not get a token to read %s from key vault %s", what, k.vaultURL),
			fix:     "give the function app a managed identity (locally: az login, or set AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET)"}
	case errors.As(err, &re):
		f := failure{status: re.StatusCode, code: re.ErrorCode}
		switch re.StatusCode {
		case 404:
			f.kind = "not_found"
			f.problem = fmt.Sprintf("%s not found in key vault %s", what, k.vaultURL)
			if key.version == "" {
				f.fix = k.setCommand(key.name)
			} else {
				f.fix = fmt.Sprintf("values sealed with it cannot be opened until it is back: list versions with az keyvault secret list-versions --vault-name %s --name %s, and recover a deleted secret with az keyvault secret recover", k.vaultName, key.name)
			}
		case 403:
			f.kind = "forbidden"
			f.problem = fmt.Sprintf("key vault %s refused to read %s (403)", k.vaultURL, what)
			f.fix = fmt.Sprintf(`assign the role "Key Vault Secrets User" on vault %s to the app's managed identity: az role assignment create --role "Key Vault Secrets User" --assignee <principal-id> --scope $(az keyvault show --name %s --query id -o tsv); new role assignments can take minutes to apply; also check that the secret is enabled`, k.vaultName, k.vaultName)
		case 401:
			f.kind = "unauthorized"
			f.problem = fmt.Sprintf("key vault %s rejected the app's token reading %s (401)", k.vaultURL, what)
			f.fix = "check that the vault is in the same Microsoft Entra tenant as the app's managed identity"
		case 429:
			f.kind = "throttled"
			f.problem = fmt.Sprintf("key vault %s throttled the read of %s (429)", k.vaultURL, what)
			f.fix = "reads are cached for SECRETS_CACHE_TTL; look for other clients of the vault"
		default:
			f.kind = "unavailable"
			f.problem = fmt.Sprintf("key vault %s answered %d reading %s", k.vaultURL, re.StatusCode, what)
			f.fix = "retried automatically; check Azure status if it persists"
		}
		return f
	case errors.Is(err, context.DeadlineExceeded):
		return failure{kind: "timeout",
			problem: fmt.Sprintf("key vault %s did not answer within %s reading %s", k.vaultURL, k.fetchTimeout, what),
			fix:     "check KEY_VAULT_URL and the network path to the vault (firewall, private endpoint, DNS)"}
	default:
		return failure{kind: "unreachable",
			problem: fmt.Sprintf("key vault %s cannot be reached reading %s", k.vaultURL, what),
			fix:     "check KEY_VAULT_URL and the network path to the vault (firewall, private endpoint, DNS)"}
	}
}

// optional reports whether a secret is normally absent: the previous CMS key
// exists only while the CMS rotates its key.
func optional(name string) bool { return name == CMSAPIKeyPrevious }

func (k *KeyVault) setCommand(name string) string {
	value := "<value>"
	if name == EncryptionKey {
		value = `"$(openssl rand -base64 32)"`
	}
	return fmt.Sprintf("create it with az keyvault secret set --vault-name %s --name %s --value %s", k.vaultName, name, value)
}

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
