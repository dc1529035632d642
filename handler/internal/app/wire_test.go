package app

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/memstore"
	"github.com/megdocs/msconnector/handler/internal/secrets"
)

// expiringSource serves every secret with one expiry date.
type expiringSource struct{ expires time.Time }

func (e expiringSource) Get(_ context.Context, name string) (secrets.Secret, error) {
	if name != secrets.ClientSecret {
		return secrets.Secret{Name: name, Value: "v", Version: "1"}, nil
	}
	return secrets.Secret{Name: name, Value: "do-not-log-me", Version: "abc", Expires: e.expires}, nil
}
func (e expiringSource) GetVersion(ctx context.Context, name, _ string) (secrets.Secret, error) {
	return e.Get(ctx, name)
}
func (e expiringSource) Reload(ctx context.Context, name string) (secrets.Secret, error) {
	return e.Get(ctx, name)
}

func TestSecretExpiringIsLoggedOnceADayAcrossInstances(t *testing.T) {
	now := time.Date(2026, 11, 26, 0, 10, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	store := memstore.New(memstore.Options{Now: time.Now})
	var buf bytes.Buffer
	log := zerolog.New(&buf)
	src := expiringSource{expires: now.Add(20 * 24 * time.Hour)}

	// Two instances, several sweeps on the same day: one line.
	a, b := expiryReminder(src, store, log, clock), expiryReminder(src, store, log, clock)
	for _, run := range []func(context.Context) error{a, b, a, b} {
		if err := run(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(buf.String(), `"event":"secret_expiring"`); n != 1 {
		t.Fatalf("secret_expiring lines = %d, want 1:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), `"secret":"microsoft-client-secret"`) || !strings.Contains(buf.String(), "2026-12-16") {
		t.Errorf("line lacks the name or date: %s", buf.String())
	}
	if strings.Contains(buf.String(), "do-not-log-me") {
		t.Error("the secret's value was logged")
	}
	// The next day: once more.
	now = now.Add(24 * time.Hour)
	_ = a(context.Background())
	_ = b(context.Background())
	if n := strings.Count(buf.String(), `"event":"secret_expiring"`); n != 2 {
		t.Errorf("after a day: %d lines, want 2", n)
	}
	// Far from expiry: nothing.
	buf.Reset()
	far := expiryReminder(expiringSource{expires: now.Add(90 * 24 * time.Hour)}, store, log, clock)
	_ = far(context.Background())
	if buf.Len() != 0 {
		t.Errorf("logged 90 days ahead: %s", buf.String())
	}
}
