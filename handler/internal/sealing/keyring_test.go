package sealing_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/megdocs/msconnector/handler/internal/sealing"
	"github.com/megdocs/msconnector/handler/internal/secrets"
)

// keyBytes has '+' and '/' in standard base64 ('-' and '_' URL-safe), so the
// encodings differ.
var keyBytes = bytes.Repeat([]byte{0xfb, 0xef, 0xbe}, 11)[:32]

func TestKeyringDecodesEncodings(t *testing.T) {
	for _, tc := range []struct{ name, value string }{
		{"standard", base64.StdEncoding.EncodeToString(keyBytes)},
		{"standard unpadded", base64.RawStdEncoding.EncodeToString(keyBytes)},
		{"url-safe", base64.URLEncoding.EncodeToString(keyBytes)},
		{"url-safe unpadded", base64.RawURLEncoding.EncodeToString(keyBytes)},
		{"trailing newline", base64.StdEncoding.EncodeToString(keyBytes) + "\n"},
		{"surrounding spaces", "  " + base64.StdEncoding.EncodeToString(keyBytes) + " \r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newStubSource()
			src.set(secrets.Secret{Name: secrets.EncryptionKey, Value: tc.value, Version: "0123456789abcdef0123456789abcdef"})
			key, err := sealing.NewSecretKeyring(src).Current(context.Background())
			if err != nil {
				t.Fatalf("Current: %v", err)
			}
			if key.Version != "0123456789abcdef0123456789abcdef" || !bytes.Equal(key.Bytes, keyBytes) {
				t.Errorf("Current = %s %x, want the key", key, key.Bytes)
			}
		})
	}
}

func TestKeyringRejectsMalformedKeys(t *testing.T) {
	for _, tc := range []struct{ name, value, version string }{
		{"16 bytes", base64.StdEncoding.EncodeToString(keyBytes[:16]), "v1"},
		{"33 bytes", base64.StdEncoding.EncodeToString(append(bytes.Clone(keyBytes), 1)), "v1"},
		{"not base64", "this is not a key, just a passphrase!!", "v1"},
		{"hex instead of base64", strings.Repeat("ab", 32), "v1"},
		{"mixed alphabets", "+-" + base64.RawStdEncoding.EncodeToString(keyBytes)[2:], "v1"},
		{"version with a dot", base64.StdEncoding.EncodeToString(keyBytes), "v.1"},
		{"empty version", base64.StdEncoding.EncodeToString(keyBytes), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newStubSource()
			src.set(secrets.Secret{Name: secrets.EncryptionKey, Value: tc.value, Version: tc.version})
			_, err := sealing.NewSecretKeyring(src).Current(context.Background())
			var nc *secrets.NotConfiguredError
			if !errors.As(err, &nc) || nc.Name != secrets.EncryptionKey {
				t.Fatalf("err = %v, want *secrets.NotConfiguredError for %s", err, secrets.EncryptionKey)
			}
			if strings.Contains(err.Error(), tc.value) {
				t.Errorf("the error carries the value: %v", err)
			}
			// Through the sealer it is still "not configured" (503), not a
			// sealing failure.
			_, err = sealing.New(sealing.NewSecretKeyring(src)).Seal(context.Background(), []byte("x"), nil)
			if !errors.Is(err, secrets.ErrNotConfigured) {
				t.Errorf("Seal: err = %v, want secrets.ErrNotConfigured", err)
			}
		})
	}
}

func TestKeyringVersion(t *testing.T) {
	ctx := context.Background()
	src := newStubSource()
	other := bytes.Repeat([]byte{7}, 32)
	src.set(secrets.Secret{Name: secrets.EncryptionKey, Value: base64.StdEncoding.EncodeToString(other), Version: "old"})
	src.set(secrets.Secret{Name: secrets.EncryptionKey, Value: base64.StdEncoding.EncodeToString(keyBytes), Version: "new"})
	kr := sealing.NewSecretKeyring(src)

	key, err := kr.Version(ctx, "old")
	if err != nil || key.Version != "old" || !bytes.Equal(key.Bytes, other) {
		t.Errorf("Version(old) = %s %x, %v", key, key.Bytes, err)
	}
	if _, err := kr.Version(ctx, "missing"); !errors.Is(err, secrets.ErrNotConfigured) {
		t.Errorf("Version(missing): err = %v, want secrets.ErrNotConfigured", err)
	}

	// A source answering another version than asked is refused.
	src.mu.Lock()
	src.versions[secrets.EncryptionKey+"/liar"] = secrets.Secret{Name: secrets.EncryptionKey, Value: base64.StdEncoding.EncodeToString(keyBytes), Version: "new"}
	src.mu.Unlock()
	if _, err := kr.Version(ctx, "liar"); err == nil {
		t.Error("Version(liar) accepted another version's key")
	}
}

func TestKeyringCacheIsSafe(t *testing.T) {
	ctx := context.Background()
	src := newStubSource()
	src.set(secrets.Secret{Name: secrets.EncryptionKey, Value: base64.StdEncoding.EncodeToString(keyBytes), Version: "v1"})
	kr := sealing.NewSecretKeyring(src)

	first, err := kr.Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range first.Bytes {
		first.Bytes[i] = 0 // a careless caller
	}
	second, err := kr.Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(second.Bytes, keyBytes) {
		t.Errorf("the cached key was changed through a returned slice")
	}

	// Same version, different value (a source bug): decoded afresh, not
	// served from the cache.
	other := bytes.Repeat([]byte{9}, 32)
	src.set(secrets.Secret{Name: secrets.EncryptionKey, Value: base64.StdEncoding.EncodeToString(other), Version: "v1"})
	third, err := kr.Current(ctx)
	if err != nil || !bytes.Equal(third.Bytes, other) {
		t.Errorf("Current after the value changed = %x, %v", third.Bytes, err)
	}
}

func TestKeyringRotation(t *testing.T) {
	ctx := context.Background()
	src := newStubSource()
	src.set(secrets.Secret{Name: secrets.EncryptionKey, Value: base64.StdEncoding.EncodeToString(keyBytes), Version: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1"})
	sealer := sealing.New(sealing.NewSecretKeyring(src))
	aad := []byte("connections|42|microsoft|RefreshTokenSealed")

	old, err := sealer.Seal(ctx, []byte("sealed with v1"), aad)
	if err != nil {
		t.Fatalf("Seal v1: %v", err)
	}
	src.set(secrets.Secret{Name: secrets.EncryptionKey, Value: base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{3}, 32)), Version: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa2"})
	fresh, err := sealer.Seal(ctx, []byte("sealed with v2"), aad)
	if err != nil {
		t.Fatalf("Seal v2: %v", err)
	}
	if v, _ := sealing.KeyVersion(fresh); v != "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa2" {
		t.Errorf("new rows sealed with %q, want v2", v)
	}
	for sealed, want := range map[string]string{old: "sealed with v1", fresh: "sealed with v2"} {
		got, err := sealer.Open(ctx, sealed, aad)
		if err != nil || string(got) != want {
			t.Errorf("Open = %q, %v; want %q", got, err, want)
		}
	}
}

func TestKeyringEnvKeyChange(t *testing.T) {
	// Locally, replacing TOKEN_ENCRYPTION_KEY makes old rows name a version
	// that is gone: "not configured", never "tampered".
	ctx := context.Background()
	env := map[string]string{secrets.EnvEncryptionKey: base64.StdEncoding.EncodeToString(keyBytes)}
	sealer := sealing.New(sealing.NewSecretKeyring(secrets.NewEnv(mapEnv(env))))
	old, err := sealer.Seal(ctx, []byte("token"), nil)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	if got, err := sealer.Open(ctx, old, nil); err != nil || string(got) != "token" {
		t.Fatalf("Open before the change = %q, %v", got, err)
	}
	env[secrets.EnvEncryptionKey] = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{5}, 32))
	_, err = sealer.Open(ctx, old, nil)
	if !errors.Is(err, secrets.ErrNotConfigured) || errors.Is(err, sealing.ErrOpen) {
		t.Errorf("Open after the key changed: err = %v, want secrets.ErrNotConfigured", err)
	}
}

// stubSource is an in-memory secrets.Source for the keyring tests: set
// changes the current version at once, with no cache in between.
type stubSource struct {
	mu       sync.Mutex
	current  map[string]secrets.Secret
	versions map[string]secrets.Secret // name + "/" + version
}

func newStubSource() *stubSource {
	return &stubSource{current: map[string]secrets.Secret{}, versions: map[string]secrets.Secret{}}
}

// set makes s the current version of its name (and a named version).
func (s *stubSource) set(sec secrets.Secret) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.current[sec.Name] = sec
	s.versions[sec.Name+"/"+sec.Version] = sec
}

func (s *stubSource) Get(_ context.Context, name string) (secrets.Secret, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, ok := s.current[name]
	if !ok {
		return secrets.Secret{}, &secrets.NotConfiguredError{Name: name, Reason: "not in the stub"}
	}
	return sec, nil
}

func (s *stubSource) GetVersion(_ context.Context, name, version string) (secrets.Secret, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, ok := s.versions[name+"/"+version]
	if !ok {
		return secrets.Secret{}, &secrets.NotConfiguredError{Name: name, Reason: "version not in the stub"}
	}
	return sec, nil
}

func (s *stubSource) Reload(ctx context.Context, name string) (secrets.Secret, error) {
	return s.Get(ctx, name)
}

func mapEnv(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
