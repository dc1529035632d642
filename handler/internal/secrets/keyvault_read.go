package secrets

// The read path of KeyVault: answer from the cache while it may, share one
// read per secret, and record what Key Vault said (keyvault_failure.go
// explains a failed read).

import (
	"context"
	"fmt"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
)

// Get returns the secret's current version, from the cache while it is
// younger than the TTL. After the TTL it reads Key Vault; if that takes
// longer than StaleWait and Key Vault answered before, it answers what Key
// Vault said last (the last good value, or why the secret is not
// configured) and lets the read finish in the background.
func (k *KeyVault) Get(ctx context.Context, name string) (Secret, error) {
	if err := checkName(name); err != nil {
		return Secret{}, err
	}
	key := slotKey{name: name}
	if s, err, ok := k.cached(key); ok {
		return s, err
	}
	last, lastErr, known := k.lastKnown(key)
	if !known {
		return k.read(ctx, key)
	}
	// A secret that failed before waits no longer than one with a last
	// good value: otherwise an absent optional secret
	// (cms-api-key-previous outside a rotation) would hold every CMS
	// request for the whole FetchTimeout while Key Vault hangs.
	wait, cancel := context.WithTimeout(ctx, k.staleWait)
	defer cancel()
	s, err := k.read(wait, key)
	if err != nil && ctx.Err() == nil && wait.Err() != nil {
		// Only the wait ran out: answer what Key Vault said last.
		return last, lastErr
	}
	return s, err
}

// GetVersion returns one named version. Versions are immutable, so once read
// it is never read again.
func (k *KeyVault) GetVersion(ctx context.Context, name, version string) (Secret, error) {
	if err := checkName(name); err != nil {
		return Secret{}, err
	}
	if err := checkVersion(version); err != nil {
		return Secret{}, err
	}
	key := slotKey{name: name, version: version}
	if s, err, ok := k.cached(key); ok {
		return s, err
	}
	return k.read(ctx, key)
}

// Reload reads the current version now, whatever the cache holds (a read
// already in progress is shared). If Key Vault cannot be read, it returns
// the last good value, like Get.
func (k *KeyVault) Reload(ctx context.Context, name string) (Secret, error) {
	if err := checkName(name); err != nil {
		return Secret{}, err
	}
	return k.read(ctx, slotKey{name: name})
}

// cached answers from the cache when the slot may not be read yet: a fresh
// or immutable value, or a recent failure still backing off.
func (k *KeyVault) cached(key slotKey) (Secret, error, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	s := k.slots[key]
	if s == nil {
		return Secret{}, nil, false
	}
	if s.hasGood && (s.permanent || k.now().Before(s.next)) {
		return s.good, nil, true
	}
	if !s.hasGood && s.err != nil && k.now().Before(s.next) {
		return Secret{}, s.err, true
	}
	return Secret{}, nil, false
}

// lastKnown is what Key Vault said last about key: the last good value, or
// the not-configured error of a secret never read successfully. known is
// false before the first answer.
func (k *KeyVault) lastKnown(key slotKey) (last Secret, lastErr error, known bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch s := k.slots[key]; {
	case s == nil:
		return Secret{}, nil, false
	case s.hasGood:
		return s.good, nil, true
	case s.err != nil:
		return Secret{}, s.err, true
	}
	return Secret{}, nil, false
}

func (k *KeyVault) read(ctx context.Context, key slotKey) (Secret, error) {
	return k.flight.do(ctx, key.name+"/"+key.version, func(ctx context.Context) (Secret, error) {
		return k.fetch(ctx, key)
	})
}

// fetch reads key from Key Vault and records the outcome. ctx is the
// flight's, detached from the caller's cancellation: other readers may be
// waiting for it, and a value read is worth caching even if the first
// caller gave up. Close cancels it.
func (k *KeyVault) fetch(ctx context.Context, key slotKey) (Secret, error) {
	life := ctx
	ctx, cancel := context.WithTimeout(ctx, k.fetchTimeout)
	defer cancel()
	resp, err := k.client.GetSecret(ctx, key.name, key.version, nil)
	var s Secret
	if err == nil {
		s, err = secretFrom(key, resp.Secret)
	}
	now := k.now()
	if err != nil && life.Err() != nil {
		// Cancelled by Close: not something Key Vault said, so not
		// recorded as its answer.
		return Secret{}, errClosed
	}
	if err != nil {
		return k.failed(key, err, now)
	}
	k.stored(key, s, now)
	return s, nil
}

func secretFrom(key slotKey, kv azsecrets.Secret) (Secret, error) {
	if kv.Value == nil || *kv.Value == "" {
		return Secret{}, errEmptyValue
	}
	s := Secret{Name: key.name, Value: *kv.Value, Version: key.version}
	if kv.ID != nil && kv.ID.Version() != "" {
		s.Version = kv.ID.Version()
	}
	if key.version != "" && s.Version != key.version {
		return Secret{}, fmt.Errorf("secrets: key vault answered version %q for version %q", s.Version, key.version)
	}
	if kv.Attributes != nil && kv.Attributes.Expires != nil {
		s.Expires = kv.Attributes.Expires.UTC()
	}
	return s, nil
}

func (k *KeyVault) stored(key slotKey, s Secret, now time.Time) {
	k.mu.Lock()
	sl := k.slot(key)
	recovered := sl.failing
	*sl = slot{good: s, hasGood: true, goodAt: now}
	if key.version == "" {
		sl.next = now.Add(k.ttl)
		if s.Version != "" {
			// The current version is also that named version, forever:
			// the keyring opening rows sealed with it needs no extra read.
			*k.slot(slotKey{key.name, s.Version}) = slot{good: s, hasGood: true, goodAt: now, permanent: true}
		}
	} else {
		sl.permanent = true
	}
	k.mu.Unlock()
	if recovered {
		k.log.Info().Str("event", "secret_recovered").Str("secret", key.name).
			Str("vault", k.vaultURL).Str("version", s.Version).
			Msg("key vault secret readable again")
	}
}

// slot returns the slot for key, creating it. Callers hold k.mu.
func (k *KeyVault) slot(key slotKey) *slot {
	s := k.slots[key]
	if s == nil {
		s = &slot{}
		k.slots[key] = s
	}
	return s
}

// Close ends the KeyVault's background work (a read in flight, which
// outlives the caller that started it) and waits for it, at most until ctx
// is done. A read that needs Key Vault after Close fails; what is cached
// still answers. app.Serve calls it last, after every component that reads
// secrets has ended.
func (k *KeyVault) Close(ctx context.Context) error {
	if err := k.flight.close(ctx); err != nil {
		return fmt.Errorf("secrets: key vault: close: %w", err)
	}
	return nil
}
