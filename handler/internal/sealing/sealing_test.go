package sealing

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// errUnknownVersion is what testKeyring answers for a version it lacks.
var errUnknownVersion = errors.New("test keyring: unknown version")

// testKeyring is an in-memory Keyring whose current version can rotate.
type testKeyring struct {
	mu      sync.Mutex
	keys    map[string][]byte
	current string
	calls   atomic.Int64
	// returnVersion, when set, is what Version answers regardless of the
	// version asked for (a broken keyring).
	returnVersion string
}

func newTestKeyring(t *testing.T, versions ...string) *testKeyring {
	t.Helper()
	k := &testKeyring{keys: map[string][]byte{}}
	for i, v := range versions {
		k.add(v, testKey(byte(i+1)))
	}
	if len(versions) > 0 {
		k.current = versions[0]
	}
	return k
}

// testKey returns a distinct, fixed 32-byte key per seed.
func testKey(seed byte) []byte {
	b := make([]byte, KeySize)
	for i := range b {
		b[i] = seed*31 + byte(i)
	}
	return b
}

func (k *testKeyring) add(version string, key []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys[version] = key
}

func (k *testKeyring) rotate(version string, key []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys[version] = key
	k.current = version
}

func (k *testKeyring) Current(ctx context.Context) (Key, error) {
	k.mu.Lock()
	cur := k.current
	k.mu.Unlock()
	return k.Version(ctx, cur)
}

func (k *testKeyring) Version(_ context.Context, version string) (Key, error) {
	k.calls.Add(1)
	k.mu.Lock()
	defer k.mu.Unlock()
	b, ok := k.keys[version]
	if !ok {
		return Key{}, fmt.Errorf("%w %q", errUnknownVersion, version)
	}
	if k.returnVersion != "" {
		version = k.returnVersion
	}
	return Key{Version: version, Bytes: b}, nil
}

func TestSealOpenRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := New(newTestKeyring(t, "k1"))
	tests := []struct {
		name      string
		plaintext []byte
		aad       []byte
	}{
		{"empty plaintext", []byte{}, []byte("connections|42|microsoft|AccessTokenSealed")},
		{"nil aad", []byte("refresh-token"), nil},
		{"token", []byte("0.AXoA-long-refresh-token_value"), []byte("connections|42|microsoft|RefreshTokenSealed")},
		{"binary", []byte{0, 1, 2, 0xff, '.', '\n'}, []byte{0}},
		{"large", bytes.Repeat([]byte("x"), 64<<10), []byte("aad")},
		{"unicode", []byte("Ada Lovelace · ✓"), []byte("connectsessions|abc|state|VerifierSealed")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sealed, err := s.Seal(ctx, tc.plaintext, tc.aad)
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			if !strings.HasPrefix(sealed, "v1.k1.") {
				t.Errorf("sealed = %q, want prefix v1.k1.", sealed)
			}
			if bytes.Contains([]byte(sealed), tc.plaintext) && len(tc.plaintext) > 4 {
				t.Errorf("sealed text contains the plaintext")
			}
			v, err := KeyVersion(sealed)
			if err != nil || v != "k1" {
				t.Errorf("KeyVersion = %q, %v; want k1, nil", v, err)
			}
			got, err := s.Open(ctx, sealed, tc.aad)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, tc.plaintext) {
				t.Errorf("Open = %q, want %q", got, tc.plaintext)
			}
		})
	}
}

func TestSealLayout(t *testing.T) {
	nonce := []byte("0123456789ab")
	s := newSealer(newTestKeyring(t, "k1"), bytes.NewReader(nonce))
	plaintext := []byte("secret token")
	sealed, err := s.Seal(context.Background(), plaintext, []byte("aad"))
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	encoded := strings.TrimPrefix(sealed, "v1.k1.")
	if strings.ContainsAny(encoded, "=+/.") {
		t.Errorf("payload %q is not unpadded base64url", encoded)
	}
	payload, err := base64.RawURLEncoding.DecodeString(encoded)
	if err != nil {
		t.Fatalf("payload: %v", err)
	}
	if got, want := len(payload), len(nonce)+len(plaintext)+tagSize; got != want {
		t.Errorf("payload length = %d, want %d (nonce | ciphertext | tag)", got, want)
	}
	if !bytes.Equal(payload[:nonceSize], nonce) {
		t.Errorf("payload starts with %x, want the nonce %x", payload[:nonceSize], nonce)
	}
}

func TestSealUsesFreshNonces(t *testing.T) {
	s := New(newTestKeyring(t, "k1"))
	seen := map[string]bool{}
	for range 100 {
		sealed, err := s.Seal(context.Background(), []byte("same"), []byte("same"))
		if err != nil {
			t.Fatalf("Seal: %v", err)
		}
		if seen[sealed] {
			t.Fatalf("Seal repeated a ciphertext: %q", sealed)
		}
		seen[sealed] = true
	}
}

func TestOpenRejectsOtherAAD(t *testing.T) {
	ctx := context.Background()
	s := New(newTestKeyring(t, "k1"))
	aad := []byte("connections|42|microsoft|AccessTokenSealed")
	sealed, err := s.Seal(ctx, []byte("token"), aad)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	for _, other := range []string{
		"connections|42|microsoft|RefreshTokenSealed", // another column
		"connections|43|microsoft|AccessTokenSealed",  // another row
		"",
		"connections|42|microsoft|AccessTokenSealed ",
	} {
		_, err := s.Open(ctx, sealed, []byte(other))
		if !errors.Is(err, ErrOpen) {
			t.Errorf("Open with aad %q: err = %v, want ErrOpen", other, err)
		}
	}
}

func TestOpenRejectsTampering(t *testing.T) {
	ctx := context.Background()
	keys := newTestKeyring(t, "k1", "k2")
	// "alias" holds k1's bytes under another name: only the authenticated
	// header tells them apart.
	keys.add("alias", testKey(1))
	s := New(keys)
	aad := []byte("aad")
	sealed, err := s.Seal(ctx, []byte("the refresh token"), aad)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(sealed, "v1.k1."))
	if err != nil {
		t.Fatalf("payload: %v", err)
	}
	// Flip one bit in every byte position in turn: nonce, ciphertext, tag.
	for i := range payload {
		tampered := bytes.Clone(payload)
		tampered[i] ^= 0x01
		text := "v1.k1." + base64.RawURLEncoding.EncodeToString(tampered)
		if _, err := s.Open(ctx, text, aad); !errors.Is(err, ErrOpen) {
			t.Fatalf("byte %d flipped: err = %v, want ErrOpen", i, err)
		}
	}
	// Truncating the tag must fail too.
	short := "v1.k1." + base64.RawURLEncoding.EncodeToString(payload[:len(payload)-1])
	if _, err := s.Open(ctx, short, aad); !errors.Is(err, ErrOpen) {
		t.Errorf("truncated: err = %v, want ErrOpen", err)
	}
	for _, version := range []string{"k2", "alias"} {
		relabelled := strings.Replace(sealed, "v1.k1.", "v1."+version+".", 1)
		if _, err := s.Open(ctx, relabelled, aad); !errors.Is(err, ErrOpen) {
			t.Errorf("relabelled as %s: err = %v, want ErrOpen", version, err)
		}
	}
}

func TestOpenAfterRotation(t *testing.T) {
	ctx := context.Background()
	keys := newTestKeyring(t, "k1")
	s := New(keys)
	aad := []byte("connections|42|microsoft|RefreshTokenSealed")
	old, err := s.Seal(ctx, []byte("sealed with k1"), aad)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}

	keys.rotate("k2", testKey(2))
	fresh, err := s.Seal(ctx, []byte("sealed with k2"), aad)
	if err != nil {
		t.Fatalf("Seal after rotation: %v", err)
	}
	if v, _ := KeyVersion(fresh); v != "k2" {
		t.Errorf("after rotation Seal used %q, want k2", v)
	}
	for sealed, want := range map[string]string{old: "sealed with k1", fresh: "sealed with k2"} {
		got, err := s.Open(ctx, sealed, aad)
		if err != nil {
			t.Fatalf("Open(%.12s...): %v", sealed, err)
		}
		if string(got) != want {
			t.Errorf("Open = %q, want %q", got, want)
		}
	}
}

func TestOpenMalformed(t *testing.T) {
	valid := "v1.k1." + base64.RawURLEncoding.EncodeToString(make([]byte, nonceSize+tagSize+3))
	encoded := strings.TrimPrefix(valid, "v1.k1.")
	tests := []struct{ name, sealed string }{
		{"empty", ""},
		{"prefix only", "v1"},
		{"no version", "v1."},
		{"no payload separator", "v1.k1"},
		{"empty payload", "v1.k1."},
		{"empty version", "v1.." + encoded},
		{"unknown format", "v2.k1." + encoded},
		{"upper-case format", "V1.k1." + encoded},
		{"leading space", " " + valid},
		{"dot in payload", "v1.k1.x." + encoded},
		{"padded", valid + "=="},
		{"standard alphabet", "v1.k1.+/" + encoded[2:]},
		{"newline in payload", "v1.k1." + encoded[:8] + "\n" + encoded[8:]},
		{"bad version character", "v1.k%1." + encoded},
		{"space in version", "v1.k 1." + encoded},
		{"version too long", "v1." + strings.Repeat("a", maxVersionLen+1) + "." + encoded},
		{"payload too short", "v1.k1." + base64.RawURLEncoding.EncodeToString(make([]byte, nonceSize+tagSize-1))},
		{"non-zero trailing bits", "v1.k1." + encoded[:len(encoded)-1] + "B"},
		{"not base64", "v1.k1.!!!!"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			keys := newTestKeyring(t, "k1")
			s := New(keys)
			_, err := s.Open(context.Background(), tc.sealed, nil)
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("Open(%q): err = %v, want ErrMalformed", tc.sealed, err)
			}
			if errors.Is(err, ErrOpen) {
				t.Errorf("Open(%q): malformed input reported as ErrOpen", tc.sealed)
			}
			if _, err := KeyVersion(tc.sealed); !errors.Is(err, ErrMalformed) {
				t.Errorf("KeyVersion(%q): err = %v, want ErrMalformed", tc.sealed, err)
			}
			if n := keys.calls.Load(); n != 0 {
				t.Errorf("keyring consulted %d times for malformed input, want 0", n)
			}
		})
	}
	// The valid skeleton itself parses: the cases above fail for their own reason.
	if v, err := KeyVersion(valid); err != nil || v != "k1" {
		t.Fatalf("KeyVersion(valid) = %q, %v", v, err)
	}
}

func TestOpenUnknownVersionReturnsKeyringError(t *testing.T) {
	ctx := context.Background()
	writer := New(newTestKeyring(t, "gone"))
	sealed, err := writer.Seal(ctx, []byte("x"), nil)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	reader := New(newTestKeyring(t, "k1"))
	_, err = reader.Open(ctx, sealed, nil)
	if !errors.Is(err, errUnknownVersion) {
		t.Errorf("err = %v, want the keyring's error", err)
	}
	if errors.Is(err, ErrOpen) || errors.Is(err, ErrMalformed) {
		t.Errorf("err = %v: a missing key is neither tampering nor malformed", err)
	}
}

func TestUnusableKeys(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		version string
		key     []byte
	}{
		{"short key", "k1", make([]byte, 16)},
		{"long key", "k1", make([]byte, 33)},
		{"nil key", "k1", nil},
		{"dot in version", "k.1", testKey(1)},
		{"empty version", "", testKey(1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			keys := &testKeyring{keys: map[string][]byte{tc.version: tc.key}, current: tc.version}
			s := New(keys)
			if _, err := s.Seal(ctx, []byte("x"), nil); !errors.Is(err, ErrKey) {
				t.Errorf("Seal: err = %v, want ErrKey", err)
			}
		})
	}

	t.Run("keyring answers another version", func(t *testing.T) {
		keys := newTestKeyring(t, "k1")
		s := New(keys)
		sealed, err := s.Seal(ctx, []byte("x"), nil)
		if err != nil {
			t.Fatalf("Seal: %v", err)
		}
		keys.returnVersion = "k2"
		if _, err := s.Open(ctx, sealed, nil); !errors.Is(err, ErrKey) {
			t.Errorf("Open: err = %v, want ErrKey", err)
		}
	})
}

type failingKeyring struct{ err error }

func (f failingKeyring) Current(context.Context) (Key, error)         { return Key{}, f.err }
func (f failingKeyring) Version(context.Context, string) (Key, error) { return Key{}, f.err }

func TestSealPropagatesErrors(t *testing.T) {
	ctx := context.Background()
	notConfigured := errors.New("not configured")
	if _, err := New(failingKeyring{notConfigured}).Seal(ctx, []byte("x"), nil); !errors.Is(err, notConfigured) {
		t.Errorf("keyring failure: err = %v, want it wrapped", err)
	}
	s := newSealer(newTestKeyring(t, "k1"), strings.NewReader("short"))
	if _, err := s.Seal(ctx, []byte("x"), nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("nonce failure: err = %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestKeyNeverPrintsBytes(t *testing.T) {
	k := Key{Version: "k1", Bytes: []byte("0123456789abcdef0123456789abcdef")}
	for _, format := range []string{"%v", "%+v", "%s", "%#v", "%x", "%d", "%q"} {
		out := fmt.Sprintf(format, k)
		if strings.Contains(out, "0123456789") || strings.Contains(out, "3031323334") || strings.Contains(out, "48 49 50") {
			t.Errorf("%s printed the key: %s", format, out)
		}
	}
}

func TestValidVersion(t *testing.T) {
	for v, want := range map[string]bool{
		"4a3b6c8d9e0f11223344556677889900":   true, // a Key Vault version
		"env1a2b3c4d":                        true,
		"k_1-2":                              true,
		"":                                   false,
		"k.1":                                false,
		"k/1":                                false,
		"k 1":                                false,
		"ké":                                 false,
		strings.Repeat("a", maxVersionLen):   true,
		strings.Repeat("a", maxVersionLen+1): false,
	} {
		if got := ValidVersion(v); got != want {
			t.Errorf("ValidVersion(%q) = %t, want %t", v, got, want)
		}
	}
}
