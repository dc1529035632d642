package secrets

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"

	"github.com/megdocs/msconnector/handler/internal/sealing"
)

// Keyring turns the token-encryption-key secret into sealing keys: each
// secret version is one key, the current version seals, any version named in
// a ciphertext opens. It is safe for concurrent use.
type Keyring struct {
	src Source

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

var _ sealing.Keyring = (*Keyring)(nil)

// NewKeyring returns a Keyring reading EncryptionKey from src.
func NewKeyring(src Source) *Keyring {
	return &Keyring{src: src, decoded: map[string]decodedKey{}}
}

// Current returns the key of the secret's current version.
func (k *Keyring) Current(ctx context.Context) (sealing.Key, error) {
	s, err := k.src.Get(ctx, EncryptionKey)
	if err != nil {
		return sealing.Key{}, fmt.Errorf("secrets: keyring: current: %w", err)
	}
	return k.decode(s)
}

// Version returns the key of one secret version, as named in a ciphertext.
func (k *Keyring) Version(ctx context.Context, version string) (sealing.Key, error) {
	s, err := k.src.GetVersion(ctx, EncryptionKey, version)
	if err != nil {
		return sealing.Key{}, fmt.Errorf("secrets: keyring: version %s: %w", version, err)
	}
	if s.Version != version {
		return sealing.Key{}, fmt.Errorf("secrets: keyring: asked for version %q, source answered %q", version, s.Version)
	}
	return k.decode(s)
}

// decode validates and decodes one version, from the cache when it can.
// Errors name the secret and version, never the value.
func (k *Keyring) decode(s Secret) (sealing.Key, error) {
	if !sealing.ValidVersion(s.Version) {
		return sealing.Key{}, &NotConfiguredError{Name: EncryptionKey,
			Reason: fmt.Sprintf("version %q cannot name a key in sealed values (want letters, digits, '-' or '_')", s.Version)}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if d, ok := k.decoded[s.Version]; ok && d.value == s.Value {
		return sealing.Key{Version: s.Version, Bytes: bytes.Clone(d.key)}, nil
	}
	key, ok := decodeKey(s.Value)
	if !ok {
		return sealing.Key{}, &NotConfiguredError{Name: EncryptionKey,
			Reason: fmt.Sprintf("version %s is not base64 of %d bytes: generate a key with openssl rand -base64 32", s.Version, sealing.KeySize)}
	}
	k.decoded[s.Version] = decodedKey{value: s.Value, key: key}
	return sealing.Key{Version: s.Version, Bytes: bytes.Clone(key)}, nil
}

// decodeKey accepts standard or URL-safe base64, padded or not, with
// surrounding white space (a trailing newline from a file or a copy-paste
// is common), and exactly KeySize bytes.
func decodeKey(value string) ([]byte, bool) {
	value = strings.TrimSpace(value)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		b, err := enc.Strict().DecodeString(value)
		if err == nil && len(b) == sealing.KeySize {
			return b, true
		}
	}
	return nil, false
}
