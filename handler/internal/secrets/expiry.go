package secrets

import (
	"context"
	"time"

	"github.com/rs/zerolog"
)

// ExpiryWarning is how far ahead CheckExpiry should look: a month leaves time
// to rotate a client secret through an app registration change.
const ExpiryWarning = 30 * 24 * time.Hour

// Expiring describes a secret whose Key Vault expiry is near, without its
// value.
type Expiring struct {
	Name    string
	Version string
	Expires time.Time
	// In is the time left until Expires at the check (negative once
	// expired).
	In time.Duration
}

// MarshalZerologObject logs the fields the secret_expiring line needs.
func (e Expiring) MarshalZerologObject(ev *zerolog.Event) {
	ev.Str("secret", e.Name).Str("version", e.Version).Time("expires", e.Expires.UTC()).
		Int64("expires_in_h", int64(e.In/time.Hour)).Bool("expired", e.In <= 0)
}

// CheckExpiry reads names from src and returns those whose expiry
// (attributes.exp) falls before now+within, already expired ones included.
// Secrets without an expiry, or that cannot be read (the source logs why,
// and an unset optional secret is normal), are skipped. It only checks:
// the sweep decides how often to run it and logs secret_expiring.
func CheckExpiry(ctx context.Context, src Source, names []string, now time.Time, within time.Duration) []Expiring {
	var out []Expiring
	deadline := now.Add(within)
	for _, name := range names {
		s, err := src.Get(ctx, name)
		if err != nil || s.Expires.IsZero() || s.Expires.After(deadline) {
			continue
		}
		out = append(out, Expiring{Name: s.Name, Version: s.Version, Expires: s.Expires, In: s.Expires.Sub(now)})
	}
	return out
}
