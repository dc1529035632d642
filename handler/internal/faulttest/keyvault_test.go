package faulttest

import (
	"net/http"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/secrets"
)

// The handler reads its secrets from a Key Vault stand-in (KEY_VAULT_URL,
// SECRETS_CACHE_TTL=1s; the handler's clock is advanced past the TTL and
// the failure backoff instead of sleeping).

func forbidden() Fault {
	return kvError(http.StatusForbidden, "Forbidden", "Caller is not authorized to perform action on resource. Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'")
}

// A secret that was never read successfully: the routes that need it answer
// 503 not_configured, the process keeps running, and the fix (a role
// assignment, the secret created) is picked up without a restart.
func TestKeyVaultFirstReadRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		secret string
		fault  Fault
		reason string
	}{
		{"403 on cms-api-key", secrets.CMSAPIKey, forbidden(), "forbidden"},
		{"404 on token-encryption-key", secrets.EncryptionKey,
			kvError(http.StatusNotFound, "SecretNotFound", "A secret with (name/id) token-encryption-key was not found in this key vault."), "not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := newVaultStandIn(t)
			s := start(t, options{accounts: 1, vault: v})
			c := s.seed(t, 0, 1)[0]
			rule := s.inj.Add(&Rule{Dependency: KeyVault, Match: SecretReads(tc.secret), Fault: tc.fault})

			wantError(t, s.token(t, c.userID), http.StatusServiceUnavailable, "not_configured")
			if rule.Injected() == 0 {
				t.Fatal("Key Vault was never asked")
			}
			var logged bool
			for _, e := range s.logs.Events("secret_unavailable") {
				logged = logged || (e["secret"] == tc.secret && e["reason"] == tc.reason)
			}
			if !logged {
				t.Errorf("no secret_unavailable line naming %s with reason %s", tc.secret, tc.reason)
			}
			if r := s.do(t, http.MethodGet, "/", nil, nil); r.status != http.StatusOK {
				t.Errorf("GET / = %d: the handler must keep serving", r.status)
			}
			s.expectKept(t, c, keptNewest)

			// Fixed in Key Vault: after the failure backoff the next call
			// reads it and works.
			s.inj.Clear()
			s.clock.Advance(2 * time.Second)
			wantToken(t, s.token(t, c.userID))
			s.expectKept(t, c, keptNewest)
		})
	}
}

// After a good read, Key Vault refusing (403), not answering (timeout) or
// resetting connections does not take the service down: the last good
// values keep serving (tokens refreshed and sealed meanwhile stay
// readable), and reads resume when the vault recovers.
func TestKeyVaultOutageAfterAGoodRead(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		fault Fault
	}{
		{"403", forbidden()},
		{"timeout", Hang()},
		{"connection reset", Reset()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := newVaultStandIn(t)
			s := start(t, options{accounts: 2, vault: v, clientTimeout: 5 * time.Second})
			conns := s.seed(t, 0, 2)
			wantToken(t, s.token(t, conns[0].userID)) // every secret read once
			c := conns[1]

			s.clock.Advance(2 * time.Second) // every cached value is past its TTL
			rule := s.inj.Add(&Rule{Dependency: KeyVault, Match: SecretReads(), Fault: tc.fault})

			// Every CMS request reads the CMS key and the optional previous
			// one (absent: Key Vault said 404). Neither may hold the
			// request until Key Vault's read gives up (FetchTimeout, 15 s,
			// SDK retries included): each waits at most the stale wait (2 s), so
			// 4 s; the bound leaves room for a slow machine.
			began := time.Now()
			if st := s.status(t, c.userID); st != "connected" {
				t.Errorf("status %s, want connected", st)
			}
			if waited := time.Since(began); waited > 7*time.Second {
				t.Errorf("GET /api/connections/{id} took %v while Key Vault failed: it waited for Key Vault instead of answering the last known values", waited.Round(time.Millisecond))
			}
			// A refresh: the CMS key, the client secret and the current
			// encryption key (to seal the new tokens) all come from the
			// last good values.
			began = time.Now()
			wantToken(t, s.token(t, c.userID))
			t.Logf("token API (with a refresh) during the outage took %v", time.Since(began).Round(time.Millisecond))
			if rule.Injected() == 0 {
				t.Fatal("Key Vault was never asked")
			}
			s.expectKept(t, c, keptNewest)

			// Recovery: the vault answers again and is read again (reads
			// still failing in the background first run out).
			s.inj.Clear()
			reads := v.readCount(secrets.CMSAPIKey)
			for attempt := 0; v.readCount(secrets.CMSAPIKey) == reads; attempt++ {
				if attempt == 40 {
					t.Fatal("the CMS key was not read again after the vault recovered")
				}
				s.clock.Advance(2 * time.Second)
				wantToken(t, s.token(t, c.userID))
				time.Sleep(250 * time.Millisecond)
			}
			s.expectKept(t, c, keptNewest)
			// The log said why Key Vault failed while the last good values
			// served (a held read says so once it gives up), and that it
			// recovered.
			if !eventually(func() bool { return s.logs.Has("secret_unavailable", "serving", "last_good") }) {
				t.Error("no secret_unavailable line saying the last good value is served")
			}
			if !eventually(func() bool { return len(s.logs.Events("secret_recovered")) > 0 }) {
				t.Error("no secret_recovered line")
			}
		})
	}
}

// eventually polls cond for up to 10 s.
func eventually(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
