package sealing_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/megdocs/msconnector/handler/internal/sealing"
	"github.com/megdocs/msconnector/handler/internal/secrets"
)

// FuzzKeyring feeds any token-encryption-key value and version, as Key
// Vault (or the environment) might hold them, to the Keyring. It never
// panics; it accepts exactly the values that are base64 (standard or
// URL-safe, padded or not, surrounding white space and line breaks
// ignored) of 32 bytes
// under a version sealed values can name, and the key it returns is those
// bytes and seals and opens; everything else is "not configured" (503),
// with an error that names the secret but does not depend on the value.
func FuzzKeyring(f *testing.F) {
	key := bytes.Repeat([]byte{0xfb, 0xef, 0xbe}, 11)[:32]
	for _, v := range []string{
		base64.StdEncoding.EncodeToString(key),
		base64.RawURLEncoding.EncodeToString(key) + "\r\n",
		" " + base64.URLEncoding.EncodeToString(key),
		base64.StdEncoding.EncodeToString(key[:31]),
		base64.StdEncoding.EncodeToString(append(bytes.Clone(key), 0)),
		strings.Repeat("ab", 32),
		"+-" + base64.RawStdEncoding.EncodeToString(key)[2:],
		base64.StdEncoding.EncodeToString(key)[:43] + "A=",
		"",
	} {
		f.Add(v, "0123456789abcdef0123456789abcdef")
	}
	f.Add(base64.StdEncoding.EncodeToString(key), "v.1")
	f.Add(base64.StdEncoding.EncodeToString(key), "")
	f.Add(base64.StdEncoding.EncodeToString(key), strings.Repeat("v", 200))
	f.Fuzz(func(t *testing.T, value, version string) {
		ctx := context.Background()
		got, err := currentKey(value, version)
		want, decodable := canonical32(value)
		accept := decodable && sealing.ValidVersion(version)

		if err != nil {
			var nc *secrets.NotConfiguredError
			if !errors.As(err, &nc) || nc.Name != secrets.EncryptionKey || !errors.Is(err, secrets.ErrNotConfigured) {
				t.Fatalf("value %q version %q: err = %v, want a secrets.NotConfiguredError for %s", value, version, err, secrets.EncryptionKey)
			}
			if accept {
				t.Fatalf("refused base64 of 32 bytes %q under version %q: %v", value, version, err)
			}
			// The message must not depend on the value (so it cannot
			// carry it into a log): compare with another bad value.
			_, other := currentKey("!", version)
			if other == nil || err.Error() != other.Error() {
				t.Fatalf("error for value %q is %q, for another bad value %v", value, err, other)
			}
			return
		}
		if !accept {
			t.Fatalf("accepted value %q version %q (decodable %t, valid version %t)", value, version, decodable, sealing.ValidVersion(version))
		}
		if got.Version != version || len(got.Bytes) != sealing.KeySize || !bytes.Equal(got.Bytes, want) {
			t.Fatalf("value %q: key %s %x, want %x", value, got, got.Bytes, want)
		}
		src := newStubSource()
		src.set(secrets.Secret{Name: secrets.EncryptionKey, Value: value, Version: version})
		s := sealing.New(sealing.NewSecretKeyring(src))
		sealed, err := s.Seal(ctx, []byte("refresh-token"), []byte("aad"))
		if err != nil {
			t.Fatalf("Seal with an accepted key: %v", err)
		}
		if opened, err := s.Open(ctx, sealed, []byte("aad")); err != nil || string(opened) != "refresh-token" {
			t.Fatalf("Open = %q, %v", opened, err)
		}

		// Locally the same value comes from TOKEN_ENCRYPTION_KEY: same key.
		env := sealing.NewSecretKeyring(secrets.NewEnv(func(k string) string {
			if k == secrets.EnvEncryptionKey {
				return value
			}
			return ""
		}))
		if k, err := env.Current(ctx); err != nil || !bytes.Equal(k.Bytes, want) {
			t.Fatalf("TOKEN_ENCRYPTION_KEY=%q: %x, %v", value, k.Bytes, err)
		}
	})
}

func currentKey(value, version string) (sealing.Key, error) {
	src := newStubSource()
	src.set(secrets.Secret{Name: secrets.EncryptionKey, Value: value, Version: version})
	return sealing.NewSecretKeyring(src).Current(context.Background())
}

// canonical32 is the oracle: the 32 bytes value is the exact encoding of,
// in one of the four base64 alphabets, once trimmed and with line breaks
// removed (encoding/base64 skips '\r' and '\n' anywhere, so a value wrapped
// over lines, as some tools print base64, is the same key).
func canonical32(value string) ([]byte, bool) {
	trimmed := strings.NewReplacer("\r", "", "\n", "").Replace(strings.TrimSpace(value))
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		b, err := enc.DecodeString(trimmed)
		if err == nil && len(b) == sealing.KeySize && enc.EncodeToString(b) == trimmed {
			return b, true
		}
	}
	return nil, false
}
