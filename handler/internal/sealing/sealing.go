// Package sealing owns the at-rest encryption of token fields: AES-256-GCM
// with versioned keys, in a self-describing text format that names the key
// version that sealed it, so a key can rotate while rows sealed with older
// versions keep opening.
//
// A Sealer does not know where keys come from: a Keyring is injected. The
// production one, SecretKeyring (keyring.go), reads the token-encryption-key
// secret's versions from a secrets.Source (Key Vault or the environment);
// sealing does no other I/O and never logs.
//
// Format (one line of ASCII, safe for a Table Storage string column):
//
//	v1.<keyVersion>.<base64url-nopad(nonce | ciphertext | tag)>
//
// with a random 96-bit nonce per seal. The header "v1.<keyVersion>." is
// authenticated together with the caller's additional data, so neither the
// format version nor the key version can be altered without Open failing.
package sealing

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
)

// KeySize is the length of every key: AES-256.
const KeySize = 32

// prefix names the format. A future format gets a new prefix; Open refuses
// prefixes it does not know rather than guessing.
const prefix = "v1."

const (
	nonceSize = 12 // 96 bits: GCM's standard nonce, safe with random nonces
	tagSize   = 16
	// maxVersionLen bounds a key version. Key Vault versions are 32 hex
	// characters; the bound only keeps junk out of stored rows.
	maxVersionLen = 128
)

// Errors callers branch on with errors.Is. Keyring errors are wrapped with
// %w as they are, so a caller can also recognise those (for example
// secrets.ErrNotConfigured).
var (
	// ErrMalformed: the sealed text is not in a format this package wrote
	// (wrong prefix, bad key version, bad base64, too short).
	ErrMalformed = errors.New("malformed sealed value")
	// ErrOpen: the ciphertext did not authenticate: it was altered, sealed
	// for other additional data (another row or column), or sealed with a
	// different key under the same version name.
	ErrOpen = errors.New("cannot open sealed value")
	// ErrKey: the keyring returned a key this package cannot use (wrong
	// length, invalid version name, or another version than asked for).
	ErrKey = errors.New("unusable key")
)

// Key is one version of the token-encryption key.
type Key struct {
	// Version names the key in every ciphertext it seals. It must be
	// non-empty and made of [A-Za-z0-9_-] (in particular no '.', which
	// separates the format's fields).
	Version string
	// Bytes is the AES-256 key: exactly KeySize bytes.
	Bytes []byte
}

// String never prints the key bytes.
func (k Key) String() string {
	return fmt.Sprintf("key{version:%q bytes:%d}", k.Version, len(k.Bytes))
}

// GoString keeps %#v from printing the key bytes too.
func (k Key) GoString() string { return k.String() }

// Format prints String for every verb: %x or %d would otherwise print the
// key bytes.
func (k Key) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, k.String()) }

// Keyring supplies keys. Implementations must be safe for concurrent use and
// should cache: Seal calls Current and Open calls Version on every use.
type Keyring interface {
	// Current returns the newest key; Seal encrypts with it.
	Current(ctx context.Context) (Key, error)
	// Version returns the key with the given version, as named in a
	// ciphertext; Open decrypts with it.
	Version(ctx context.Context, version string) (Key, error)
}

// Sealer seals and opens token fields. It is safe for concurrent use.
type Sealer struct {
	keys Keyring
	rand io.Reader
}

// New returns a Sealer drawing keys from k and nonces from crypto/rand.
func New(k Keyring) *Sealer { return newSealer(k, rand.Reader) }

// newSealer lets tests fix the nonce source.
func newSealer(k Keyring, r io.Reader) *Sealer { return &Sealer{keys: k, rand: r} }

// Seal encrypts plaintext with the keyring's current key, binding it to aad
// (for a table column: the row's keys and the column name), and returns the
// sealed text.
func (s *Sealer) Seal(ctx context.Context, plaintext, aad []byte) (string, error) {
	key, err := s.keys.Current(ctx)
	if err != nil {
		return "", fmt.Errorf("sealing: seal: current key: %w", err)
	}
	if err := checkKey(key); err != nil {
		return "", fmt.Errorf("sealing: seal: %w", err)
	}
	aead, err := newAEAD(key.Bytes)
	if err != nil {
		return "", fmt.Errorf("sealing: seal: %w", err)
	}
	nonce := make([]byte, nonceSize, nonceSize+len(plaintext)+tagSize)
	if _, err := io.ReadFull(s.rand, nonce); err != nil {
		return "", fmt.Errorf("sealing: seal: nonce: %w", err)
	}
	header := prefix + key.Version + "."
	// Appending to nonce leaves nonce | ciphertext | tag in one slice.
	payload := aead.Seal(nonce, nonce, plaintext, headerAAD(header, aad))
	return header + base64.RawURLEncoding.EncodeToString(payload), nil
}

// Open decrypts sealed with the key version it names, checking it was sealed
// with the same aad. It returns an error wrapping ErrMalformed or ErrOpen
// when the text itself is at fault, or the keyring's error when the key
// version cannot be had.
func (s *Sealer) Open(ctx context.Context, sealed string, aad []byte) ([]byte, error) {
	version, payload, err := parse(sealed)
	if err != nil {
		return nil, fmt.Errorf("sealing: open: %w", err)
	}
	key, err := s.keys.Version(ctx, version)
	if err != nil {
		return nil, fmt.Errorf("sealing: open: key version %q: %w", version, err)
	}
	if err := checkKey(key); err != nil {
		return nil, fmt.Errorf("sealing: open: %w", err)
	}
	if key.Version != version {
		// A keyring answering with another version would make every open
		// fail as "tampered"; say what is really wrong.
		return nil, fmt.Errorf("sealing: open: %w: asked for version %q, keyring returned %q", ErrKey, version, key.Version)
	}
	aead, err := newAEAD(key.Bytes)
	if err != nil {
		return nil, fmt.Errorf("sealing: open: %w", err)
	}
	plaintext, err := aead.Open(nil, payload[:nonceSize], payload[nonceSize:], headerAAD(prefix+version+".", aad))
	if err != nil {
		return nil, fmt.Errorf("sealing: open: %w", ErrOpen)
	}
	return plaintext, nil
}

// KeyVersion returns the key version named in sealed without decrypting it,
// so a store can tell which rows still use an old key. Errors wrap
// ErrMalformed.
func KeyVersion(sealed string) (string, error) {
	version, _, err := parse(sealed)
	if err != nil {
		return "", fmt.Errorf("sealing: key version: %w", err)
	}
	return version, nil
}

// ValidVersion reports whether v can name a key in the sealed format.
func ValidVersion(v string) bool {
	if v == "" || len(v) > maxVersionLen {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// parse splits sealed into its key version and decoded payload (nonce |
// ciphertext | tag), checking everything that can be checked without a key.
func parse(sealed string) (version string, payload []byte, err error) {
	rest, ok := strings.CutPrefix(sealed, prefix)
	if !ok {
		return "", nil, fmt.Errorf("%w: unknown format", ErrMalformed)
	}
	version, encoded, ok := strings.Cut(rest, ".")
	if !ok {
		return "", nil, fmt.Errorf("%w: missing key version", ErrMalformed)
	}
	if !ValidVersion(version) {
		return "", nil, fmt.Errorf("%w: invalid key version", ErrMalformed)
	}
	// Strict RawURLEncoding rejects padding, '+', '/', '.' and non-zero
	// trailing bits; the decoder skips CR and LF, so refuse those here: one
	// payload has exactly one spelling.
	payload, err = base64.RawURLEncoding.Strict().DecodeString(encoded)
	if err != nil || strings.ContainsAny(encoded, "\r\n") {
		return "", nil, fmt.Errorf("%w: payload is not base64url", ErrMalformed)
	}
	if len(payload) < nonceSize+tagSize {
		return "", nil, fmt.Errorf("%w: payload too short", ErrMalformed)
	}
	return version, payload, nil
}

func checkKey(k Key) error {
	if !ValidVersion(k.Version) {
		return fmt.Errorf("%w: invalid key version %q", ErrKey, k.Version)
	}
	if len(k.Bytes) != KeySize {
		return fmt.Errorf("%w: key version %q has %d bytes, want %d", ErrKey, k.Version, len(k.Bytes), KeySize)
	}
	return nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	return aead, nil
}

// headerAAD authenticates the header with the caller's data. The header ends
// with '.', which no version contains, so header | aad splits one way only.
func headerAAD(header string, aad []byte) []byte {
	out := make([]byte, 0, len(header)+len(aad))
	out = append(out, header...)
	return append(out, aad...)
}
