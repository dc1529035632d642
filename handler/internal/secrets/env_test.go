package secrets

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
)

func mapEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestEnvGet(t *testing.T) {
	ctx := context.Background()
	env := map[string]string{
		EnvClientSecret:  "client-secret-value",
		EnvEncryptionKey: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
		EnvCMSAPIKey:     "cms-key",
	}
	src := NewEnv(mapEnv(env))

	tests := []struct {
		name        string
		wantValue   string
		wantVersion *regexp.Regexp
	}{
		{ClientSecret, "client-secret-value", regexp.MustCompile(`^env$`)},
		{CMSAPIKey, "cms-key", regexp.MustCompile(`^env$`)},
		{EncryptionKey, env[EnvEncryptionKey], regexp.MustCompile(`^env[0-9a-f]{8}$`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, read := range []func(context.Context, string) (Secret, error){src.Get, src.Reload} {
				s, err := read(ctx, tc.name)
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				if s.Name != tc.name || s.Value != tc.wantValue || !tc.wantVersion.MatchString(s.Version) || !s.Expires.IsZero() {
					t.Errorf("got %s (value match %t), want version matching %s", s, s.Value == tc.wantValue, tc.wantVersion)
				}
			}
		})
	}
}

func TestEnvMissing(t *testing.T) {
	src := NewEnv(mapEnv(map[string]string{EnvCMSAPIKey: ""}))
	for _, name := range []string{CMSAPIKey, CMSAPIKeyPrevious, WebhookSecret} {
		_, err := src.Get(context.Background(), name)
		var nc *NotConfiguredError
		if !errors.Is(err, ErrNotConfigured) || !errors.As(err, &nc) {
			t.Fatalf("Get(%s): err = %v, want *NotConfiguredError", name, err)
		}
		if nc.Name != name || !strings.Contains(nc.Reason, EnvName(name)) {
			t.Errorf("error %q: want the name %s and variable %s", err, name, EnvName(name))
		}
	}
}

func TestEnvEncryptionKeyVersionFollowsValue(t *testing.T) {
	ctx := context.Background()
	env := map[string]string{EnvEncryptionKey: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}
	src := NewEnv(mapEnv(env))
	first, err := src.Get(ctx, EncryptionKey)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := src.Get(ctx, EncryptionKey)
	if first.Version != again.Version {
		t.Errorf("same value, versions %q and %q", first.Version, again.Version)
	}
	if strings.Contains(first.Version, env[EnvEncryptionKey][:8]) {
		t.Errorf("version %q carries the value itself", first.Version)
	}

	env[EnvEncryptionKey] = "HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE="
	changed, err := src.Get(ctx, EncryptionKey)
	if err != nil {
		t.Fatal(err)
	}
	if changed.Version == first.Version {
		t.Fatalf("a changed key kept version %q", first.Version)
	}

	// The current version is available by name; the replaced one is not,
	// and says so as "not configured" (not as a tampered ciphertext).
	if s, err := src.GetVersion(ctx, EncryptionKey, changed.Version); err != nil || s.Value != env[EnvEncryptionKey] {
		t.Errorf("GetVersion(current) = %s, %v", s, err)
	}
	_, err = src.GetVersion(ctx, EncryptionKey, first.Version)
	var nc *NotConfiguredError
	if !errors.As(err, &nc) || nc.Name != EncryptionKey || !strings.Contains(nc.Reason, first.Version) {
		t.Errorf("GetVersion(replaced) err = %v, want *NotConfiguredError naming the version", err)
	}
}

func TestEnvRejectsInvalidNames(t *testing.T) {
	src := NewEnv(func(string) string { t.Error("getenv called for an invalid name"); return "x" })
	for _, name := range []string{"", "../etc", "a/b", "name with space", strings.Repeat("a", 128)} {
		if _, err := src.Get(context.Background(), name); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Get(%q): err = %v, want ErrInvalidName", name, err)
		}
	}
}
