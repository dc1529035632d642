package sealing_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets/fake"
	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/clocktest"
	"github.com/megdocs/msconnector/handler/internal/kvtest"
	"github.com/megdocs/msconnector/handler/internal/sealing"
	"github.com/megdocs/msconnector/handler/internal/secrets"
)

const (
	ver1 = "11111111111111111111111111111111"
	ver2 = "22222222222222222222222222222222"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func assertNoValues(t *testing.T, logs *bytes.Buffer, values ...string) {
	t.Helper()
	for _, v := range values {
		if strings.Contains(logs.String(), v) {
			t.Errorf("a key value was logged")
		}
	}
}

// The keyring over Key Vault (the SDK's fake server over kvtest's state):
// a new version seals new rows, and rows sealed before keep opening.
func TestKeyringOverKeyVaultRotation(t *testing.T) {
	v := kvtest.New(t, "megdocs-test.vault.azure.net", "unused-in-process")
	clock := clocktest.New(t0)
	logs := &bytes.Buffer{}
	kv, err := secrets.NewKeyVault(v.URL+"/", v.Credential(), secrets.KeyVaultOptions{
		Now: clock.Now, Transport: fake.NewServerTransport(v.FakeServer()),
		Retry: policy.RetryOptions{MaxRetries: -1}, Logger: zerolog.New(logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	key1 := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	key2 := base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210"))
	v.Put(secrets.EncryptionKey, ver1, key1, time.Time{})
	sealer := sealing.New(sealing.NewSecretKeyring(kv))
	ctx := context.Background()
	aad := []byte("connections|42|microsoft|RefreshTokenSealed")

	rowV1, err := sealer.Seal(ctx, []byte("refresh token sealed under v1"), aad)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	v.Put(secrets.EncryptionKey, ver2, key2, time.Time{}) // admin adds a new version
	clock.Advance(secrets.DefaultTTL)
	rowV2, err := sealer.Seal(ctx, []byte("refresh token sealed under v2"), aad)
	if err != nil {
		t.Fatalf("Seal after rotation: %v", err)
	}
	if got, _ := sealing.KeyVersion(rowV2); got != ver2 {
		t.Fatalf("sealed with %q after rotation, want %s", got, ver2)
	}
	if got, _ := sealing.KeyVersion(rowV1); got != ver1 {
		t.Fatalf("first row names %q, want %s", got, ver1)
	}
	for row, want := range map[string]string{rowV1: "refresh token sealed under v1", rowV2: "refresh token sealed under v2"} {
		got, err := sealer.Open(ctx, row, aad)
		if err != nil || string(got) != want {
			t.Errorf("Open = %q, %v; want %q", got, err, want)
		}
	}
	// v1 was read as current before, so it opens from the cache: two
	// reads of the current version, none by name.
	if n := v.ReadCount(""); n != 2 {
		_, reads := v.Seen()
		t.Errorf("%d Key Vault calls, want 2: %v", n, reads)
	}
	assertNoValues(t, logs, key1, key2)
}

// End to end over HTTPS with the 401 challenge: a new instance that never
// saw v1 reads that version by name to open rows sealed with it.
func TestKeyringRotationEndToEnd(t *testing.T) {
	v := kvtest.New(t, "megdocs-e2e.vault.azure.net", "static-token-for-key-vault").Start(t)
	key1 := base64.StdEncoding.EncodeToString([]byte("e2e-key-one-32-bytes-long-......"))
	key2 := base64.StdEncoding.EncodeToString([]byte("e2e-key-two-32-bytes-long-......"))
	v.Put(secrets.EncryptionKey, ver1, key1, time.Time{})
	logs := &bytes.Buffer{}
	t.Cleanup(func() { assertNoValues(t, logs, key1, key2) })
	clock := clocktest.New(t0)
	ctx := context.Background()
	aad := []byte("connections|42|microsoft|AccessTokenSealed")
	newKeyVault := func() *secrets.KeyVault {
		kv, err := secrets.NewKeyVault(v.URL, v.Credential(), secrets.KeyVaultOptions{
			Now: clock.Now, Transport: v.Client(),
			Retry:  policy.RetryOptions{MaxRetries: 1, RetryDelay: 10 * time.Millisecond},
			Logger: zerolog.New(logs),
		})
		if err != nil {
			t.Fatal(err)
		}
		return kv
	}

	sealer := sealing.New(sealing.NewSecretKeyring(newKeyVault()))
	rowV1, err := sealer.Seal(ctx, []byte("access token under v1"), aad)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}

	v.Put(secrets.EncryptionKey, ver2, key2, time.Time{}) // az keyvault secret set: a new version
	clock.Advance(secrets.DefaultTTL)
	rowV2, err := sealer.Seal(ctx, []byte("access token under v2"), aad)
	if err != nil {
		t.Fatalf("Seal after rotation: %v", err)
	}
	if got, _ := sealing.KeyVersion(rowV2); got != ver2 {
		t.Fatalf("new rows name %q, want %s", got, ver2)
	}

	// Another instance (or this one after a restart) has never seen v1: it
	// reads that version by name.
	other := sealing.New(sealing.NewSecretKeyring(newKeyVault()))
	for row, want := range map[string]string{rowV1: "access token under v1", rowV2: "access token under v2"} {
		for name, s := range map[string]*sealing.Sealer{"same instance": sealer, "new instance": other} {
			got, err := s.Open(ctx, row, aad)
			if err != nil || string(got) != want {
				t.Errorf("%s: Open = %q, %v; want %q", name, got, err, want)
			}
		}
	}
	_, reads := v.Seen()
	var named bool
	for _, r := range reads {
		if r == "/secrets/"+secrets.EncryptionKey+"/"+ver1 {
			named = true
		}
	}
	if !named {
		t.Errorf("reads %v: the new instance never asked for version %s by name", reads, ver1)
	}
}
