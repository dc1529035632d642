package faulttest

import (
	"net/http"
	"sync/atomic"
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
		hangs bool
	}{
		{"403", forbidden(), false},
		{"timeout", Hang(), true},
		{"connection reset", Reset(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := newVaultStandIn(t)
			// A held Key Vault call ends when the handler gives up on it:
			// its client's timeout, or the read's FetchTimeout (15 s,
			// SDK retries included), whichever comes first. With the
			// production client (30 s) that is FetchTimeout.
			timeout := 5 * time.Second
			if tc.hangs {
				timeout = 0
			}
			s := start(t, options{accounts: 2, vault: v, clientTimeout: timeout})
			conns := s.seed(t, 0, 2)
			wantToken(t, s.token(t, conns[0].userID)) // every secret read once
			c := conns[1]

			s.clock.Advance(2 * time.Second) // every cached value is past its TTL
			var held, gaveUp atomic.Int64
			fault := func(c *Call) (*http.Response, error) {
				held.Add(1)
				defer gaveUp.Add(1)
				return tc.fault(c)
			}
			rule := s.inj.Add(&Rule{Dependency: KeyVault, Match: SecretReads(), Fault: fault})

			// Every CMS request reads the CMS key and the optional previous
			// one (absent: Key Vault said 404). Neither may hold the
			// request until Key Vault's read gives up: each waits at most
			// the stale wait (2 s) and answers the last known value. While
			// Key Vault hangs, that is an order of events, not a time: the
			// answer must come while every held read is still held. A
			// handler that waited for a read answers only after the
			// read gave up, however fast or slow the machine; a correct
			// one fails this only if it took longer than FetchTimeout.
			began := time.Now()
			st := s.status(t, c.userID)
			stillHeld := gaveUp.Load() == 0
			t.Logf("GET /api/connections/{id} during the outage took %v", time.Since(began).Round(time.Millisecond))
			if st != "connected" {
				t.Errorf("status %s, want connected", st)
			}
			if tc.hangs {
				if held.Load() == 0 {
					t.Fatal("the status request read nothing from Key Vault: the outage was not exercised")
				}
				if !stillHeld {
					t.Errorf("GET /api/connections/{id} answered only after a held Key Vault read gave up: it waited for Key Vault instead of answering the last known values")
				}
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

			if tc.hangs {
				// Let a held read give up (FetchTimeout), as it would in
				// a real outage, so the log can say so below; clearing
				// the injector first would end it with a reset the SDK
				// retries into a success.
				deadline := time.Now().Add(30 * time.Second)
				for gaveUp.Load() == 0 {
					if time.Now().After(deadline) {
						t.Fatal("no held Key Vault read gave up within 30 s: FetchTimeout (15 s) does not bound the read")
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
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

// eventually polls cond for up to 30 s: a patience for asynchronous work
// (a background read giving up, its log line), not a timing assertion; a
// loaded CI runner once took longer than 10 s here.
func eventually(cond func() bool) bool {
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
