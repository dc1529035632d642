package sealing

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"

	"github.com/megdocs/msconnector/handler/internal/secrets"
)

// SecretKeyring is the production Keyring: it turns the
// token-encryption-key secret into keys. Each secret version is one key, the
// current version seals, any version named in a ciphertext opens. It is safe
// for concurrent use.
//
// It lives here rather than in secrets because what a key is (KeySize bytes
// of base64, under a version a ciphertext can name) is sealing's business;
// secrets supplies named secret versions and knows nothing of keys. So
// sealing imports secrets, and secrets imports nothing of ours.
type SecretKeyring struct {
	src secrets.Source

	mu sync.Mutex
	// decoded caches keys by version. The raw value is kept beside the key
	// so a source answering a known version with another value (it should
	// not) is decoded again rather than trusted.
	decoded map[string]decodedKey
}

type decodedKey struct {
	value string
	key   []byte
}

var _ Keyring = (*SecretKeyring)(nil)

// NewSecretKeyring returns a Keyring reading secrets.EncryptionKey from src.
func NewSecretKeyring(src secrets.Source) *SecretKeyring {
	return &SecretKeyring{src: src, decoded: map[string]decodedKey{}}
}

// Current returns the key of the secret's current version.
func (k *SecretKeyring) Current(ctx context.Context) (Key, error) {
	s, err := k.src.Get(ctx, secrets.EncryptionKey)
	if err != nil {
		return Key{}, fmt.Errorf("sealing: keyring: current: %w", err)
	}
	return k.decode(s)
}

// Version returns the key of one secret version, as named in a ciphertext.
func (k *SecretKeyring) Version(ctx context.Context, version string) (Key, error) {
	s, err := k.src.GetVersion(ctx, secrets.EncryptionKey, version)
	if err != nil {
		return Key{}, fmt.Errorf("sealing: keyring: version %s: %w", version, err)
	}
	if s.Version != version {
		return Key{}, fmt.Errorf("sealing: keyring: asked for version %q, source answered %q", version, s.Version)
	}
	return k.decode(s)
}

// decode validates and decodes one version, from the cache when it can.
// Errors name the secret and version, never the value.
func (k *SecretKeyring) decode(s secrets.Secret) (Key, error) {
	if !ValidVersion(s.Version) {
		return Key{}, &secrets.NotConfiguredError{Name: secrets.EncryptionKey,
			Reason: fmt.Sprintf("version %q cannot name a key in sealed values (want letters, digits, '-' or '_')", s.Version)}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if d, ok := k.decoded[s.Version]; ok && d.value == s.Value {
		return Key{Version: s.Version, Bytes: bytes.Clone(d.key)}, nil
	}
	key, ok := decodeKey(s.Value)
	if !ok {
		return Key{}, &secrets.NotConfiguredError{Name: secrets.EncryptionKey,
			Reason: fmt.Sprintf("version %s is not base64 of %d bytes: generate a key with openssl rand -base64 32", s.Version, KeySize)}
	}
	k.decoded[s.Version] = decodedKey{value: s.Value, key: key}
	return Key{Version: s.Version, Bytes: bytes.Clone(key)}, nil
}

// decodeKey accepts standard or URL-safe base64, padded or not, with
// surrounding white space (a trailing newline from a file or a copy-paste
// is common), and exactly KeySize bytes.
func decodeKey(value string) ([]byte, bool) {
	value = strings.TrimSpace(value)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		b, err := enc.Strict().DecodeString(value)
		if err == nil && len(b) == KeySize {
			return b, true
		}
	}
	return nil, false
}
