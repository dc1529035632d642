// Package secrets owns where the connector's secrets come from: Azure Key
// Vault (azsecrets with an azidentity credential) in Azure, the environment
// for local development. It caches values for a TTL so a rotation in Key
// Vault takes effect without a restart, keeps serving the last good value
// while Key Vault cannot be read. What the token-encryption-key secret means
// as a key is sealing's business (sealing.SecretKeyring reads it from here).
//
// It does not touch tokens or tables, never logs a secret value, and never
// contacts Key Vault before the first read (start-up must not wait on it).
package secrets

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// Secret names in Key Vault (the contract's table).
const (
	ClientSecret      = "microsoft-client-secret"
	EncryptionKey     = "token-encryption-key"
	CMSAPIKey         = "cms-api-key"
	CMSAPIKeyPrevious = "cms-api-key-previous"
	WebhookSecret     = "cms-webhook-secret"
)

// Environment fallback names, used when KEY_VAULT_URL is unset (local
// development only).
const (
	EnvClientSecret      = "MICROSOFT_CLIENT_SECRET"
	EnvEncryptionKey     = "TOKEN_ENCRYPTION_KEY"
	EnvCMSAPIKey         = "CMS_API_KEY"
	EnvCMSAPIKeyPrevious = "CMS_API_KEY_PREVIOUS"
	EnvWebhookSecret     = "CMS_WEBHOOK_SECRET"
)

// Names lists every secret the contract defines, for start-up summaries and
// expiry checks.
func Names() []string {
	return []string{ClientSecret, EncryptionKey, CMSAPIKey, CMSAPIKeyPrevious, WebhookSecret}
}

// EnvName returns the environment fallback name of a secret:
// upper case, '-' as '_' (which is what the contract's table spells out).
func EnvName(name string) string {
	return strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Secret is one version of a secret. Value is the only sensitive field:
// String, GoString, MarshalJSON and MarshalZerologObject never print it, so a
// Secret can be logged or formatted by mistake without leaking.
type Secret struct {
	Name  string
	Value string
	// Version identifies this value: Key Vault's secret version, or for the
	// environment "env" (the encryption key: "env" + 8 hex characters of
	// the value's SHA-256, so a changed local key is a new version).
	Version string
	// Expires is Key Vault's expiry attribute (attributes.exp); zero when
	// the secret has none.
	Expires time.Time
}

// String prints the secret without its value.
func (s Secret) String() string {
	exp := "none"
	if !s.Expires.IsZero() {
		exp = s.Expires.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("secret{name:%q version:%q value_set:%t expires:%s}", s.Name, s.Version, s.Value != "", exp)
}

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return s.String() }

// Format prints String for every verb: verbs that do not use String (%d,
// %t, ...) would otherwise print the fields, value included.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }

// MarshalJSON keeps json (and zerolog's Interface) from printing the value.
func (s Secret) MarshalJSON() ([]byte, error) {
	type redacted struct {
		Name     string     `json:"name"`
		Version  string     `json:"version"`
		ValueSet bool       `json:"value_set"`
		Expires  *time.Time `json:"expires,omitempty"`
	}
	r := redacted{Name: s.Name, Version: s.Version, ValueSet: s.Value != ""}
	if !s.Expires.IsZero() {
		exp := s.Expires.UTC()
		r.Expires = &exp
	}
	return json.Marshal(r)
}

// MarshalZerologObject logs the secret's name, version and expiry only.
func (s Secret) MarshalZerologObject(e *zerolog.Event) {
	e.Str("name", s.Name).Str("version", s.Version).Bool("value_set", s.Value != "")
	if !s.Expires.IsZero() {
		e.Time("expires", s.Expires.UTC())
	}
}

// Source supplies secrets. Implementations are safe for concurrent use.
type Source interface {
	// Get returns the current version, cached for the source's TTL.
	Get(ctx context.Context, name string) (Secret, error)
	// GetVersion returns a named version (versions are immutable, so it is
	// cached for good).
	GetVersion(ctx context.Context, name, version string) (Secret, error)
	// Reload reads the current version again, bypassing the cache: for
	// when the value in hand was just refused (Microsoft's invalid_client).
	Reload(ctx context.Context, name string) (Secret, error)
}

// ErrNotConfigured is matched (errors.Is) by every *NotConfiguredError, and
// gives it its code: 503 not_configured.
var ErrNotConfigured = &connection.Error{Code: connection.ENotConfigured, Message: "a required secret is missing or malformed: see the log"}

// NotConfiguredError: a secret (or a version of it) has never been read
// successfully: it is missing, access is refused, or its value is malformed.
// The HTTP API answers 503 not_configured for it; Reason says what an admin
// should do and goes to the log. Neither field ever holds the value.
type NotConfiguredError struct {
	Name   string
	Reason string
	// Err is the underlying failure, when there is one (for example an
	// *azcore.ResponseError); it is unwrapped by errors.Is/As.
	Err error
}

// Error names the secret and the reason; never the value.
func (e *NotConfiguredError) Error() string {
	return "secrets: " + e.Name + " not configured: " + e.Reason
}

// Unwrap makes errors.Is(err, ErrNotConfigured) hold (and ErrorCode say
// not_configured), and exposes the underlying failure.
func (e *NotConfiguredError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrNotConfigured}
	}
	return []error{ErrNotConfigured, e.Err}
}
