package secrets

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestCheckExpiry(t *testing.T) {
	now := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	src := newStubSource()
	src.set(Secret{Name: ClientSecret, Value: "cs", Version: "a", Expires: now.Add(10 * 24 * time.Hour)})
	src.set(Secret{Name: CMSAPIKey, Value: "k", Version: "b", Expires: now.Add(31 * 24 * time.Hour)})
	src.set(Secret{Name: WebhookSecret, Value: "w", Version: "c", Expires: now.Add(-time.Hour)})
	src.set(Secret{Name: EncryptionKey, Value: "e", Version: "d"})                                      // no expiry
	src.set(Secret{Name: CMSAPIKeyPrevious, Value: "p", Version: "e", Expires: now.Add(ExpiryWarning)}) // exactly at the edge
	names := append(Names(), "not-set-anywhere")

	got := CheckExpiry(context.Background(), src, names, now, ExpiryWarning)

	want := map[string]time.Duration{
		ClientSecret:      10 * 24 * time.Hour,
		WebhookSecret:     -time.Hour,
		CMSAPIKeyPrevious: ExpiryWarning,
	}
	if len(got) != len(want) {
		t.Fatalf("CheckExpiry = %v, want %d secrets", got, len(want))
	}
	for _, e := range got {
		in, ok := want[e.Name]
		if !ok {
			t.Errorf("unexpected %s", e.Name)
			continue
		}
		if e.In != in || !e.Expires.Equal(now.Add(in)) {
			t.Errorf("%s: in %s expires %s, want in %s", e.Name, e.In, e.Expires, in)
		}
	}

	var lb logBuffer
	log := zerolog.New(&lb)
	for _, e := range got {
		log.Warn().Str("event", "secret_expiring").EmbedObject(e).Msg("secret expires soon")
	}
	out := lb.String()
	for _, v := range []string{`"cs"`, `"w"`, `"p"`} {
		if strings.Contains(out, v) {
			t.Errorf("expiry log carries a value %s: %s", v, out)
		}
	}
	if !strings.Contains(out, `"secret":"cms-webhook-secret"`) || !strings.Contains(out, `"expired":true`) {
		t.Errorf("expiry log = %s, want the secret name and expired flag", out)
	}
}
