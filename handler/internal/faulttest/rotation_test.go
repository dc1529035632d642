package faulttest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/megdocs/msconnector/handler/internal/secrets"
)

// Issue 4: every secret rotates in Key Vault without a restart, and a token
// request in steady state makes no Key Vault call.
func TestSecretsRotateWithoutRestart(t *testing.T) {
	v := newVaultStandIn(t)
	s := start(t, options{accounts: 6, vault: v, settings: map[string]string{"SECRETS_CACHE_TTL": "5m"}})
	conns := s.seed(t, 0, 6)

	t.Run("steady state: no Key Vault call per token request", func(t *testing.T) {
		wantToken(t, s.token(t, conns[0].userID)) // refreshes: every secret is read once
		before := v.totalReads()
		for i := 0; i < 50; i++ {
			wantToken(t, s.token(t, conns[0].userID)) // not due: served from the store
		}
		if got := v.totalReads() - before; got != 0 {
			t.Errorf("50 token requests made %d Key Vault reads, want 0", got)
		}
	})

	t.Run("client secret: a new version is used once the TTL passes, with no invalid_client", func(t *testing.T) {
		old := v.value(secrets.ClientSecret)
		next := randomString(32)
		v.put(secrets.ClientSecret, "", next)
		s.idp.SetClientSecrets(old, next) // the runbook's overlap: both valid
		s.clock.Advance(6 * time.Minute)  // past SECRETS_CACHE_TTL
		s.idp.SetClientSecrets(next)      // ...and now the old one is deleted
		before := s.idp.TokenRequests("refresh_token")
		wantToken(t, s.token(t, conns[1].userID))
		if got := s.idp.TokenRequests("refresh_token") - before; got != 1 {
			t.Errorf("%d token requests, want 1: the new secret should be used without an invalid_client first", got)
		}
	})

	t.Run("client secret: rotated and the old one deleted at once: invalid_client, read again, retried once", func(t *testing.T) {
		next := randomString(32)
		v.put(secrets.ClientSecret, "", next)
		s.idp.SetClientSecrets(next) // within the TTL: the handler still has the old one
		before := s.idp.TokenRequests("refresh_token")
		wantToken(t, s.token(t, conns[2].userID))
		if got := s.idp.TokenRequests("refresh_token") - before; got != 2 {
			t.Errorf("%d token requests, want 2 (invalid_client, then the retry with the secret read again)", got)
		}
	})

	t.Run("encryption key: v1 rows still open after v2 is current, and are resealed with v2 on their next write", func(t *testing.T) {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		const v2 = "fedcba9876543210fedcba9876543210"
		v.put(secrets.EncryptionKey, v2, base64.StdEncoding.EncodeToString(key))
		s.clock.Advance(6 * time.Minute)

		// conns[0] was sealed with v1 and is not due: the token API opens it.
		wantToken(t, s.token(t, conns[0].userID))
		// conns[3] is due: its refresh writes, sealed with v2.
		wantToken(t, s.token(t, conns[3].userID))

		if got := s.rawKeyVersion(t, conns[3].userID); got != v2 {
			t.Errorf("refreshed row sealed with %q, want the new version %q", got, v2)
		}
		if got := s.rawKeyVersion(t, conns[0].userID); got != keyVersion1 {
			t.Errorf("untouched row sealed with %q, want still %q (reads do not write)", got, keyVersion1)
		}
		// The sweep reseals the rest within one REFRESH_MAX_AGE cycle;
		// here every remaining row is due, so one sweep does it.
		s.clock.Advance(25 * time.Hour)
		s.sweep(t)
		for _, c := range conns {
			if got := s.rawKeyVersion(t, c.userID); got != v2 {
				t.Errorf("%s sealed with %q after a sweep, want %q", c.userID, got, v2)
			}
		}
	})

	t.Run("CMS key: the previous one works until it is removed", func(t *testing.T) {
		prev := s.cmsKey
		next := randomString(32)
		v.put(secrets.CMSAPIKey, "", next)
		v.put(secrets.CMSAPIKeyPrevious, "", prev)
		s.clock.Advance(6 * time.Minute)
		for _, key := range []string{next, prev} {
			if r := doAt(t, s.hc, s.url, key, http.MethodGet, "/api/connections/"+conns[0].userID, nil, nil); r.status != http.StatusOK {
				t.Errorf("key accepted while rotating: %d %s", r.status, r.body)
			}
		}
		v.remove(secrets.CMSAPIKeyPrevious)
		s.clock.Advance(6 * time.Minute)
		if r := doAt(t, s.hc, s.url, prev, http.MethodGet, "/api/connections/"+conns[0].userID, nil, nil); r.status != http.StatusUnauthorized {
			t.Errorf("removed previous key: %d, want 401", r.status)
		}
		if r := doAt(t, s.hc, s.url, next, http.MethodGet, "/api/connections/"+conns[0].userID, nil, nil); r.status != http.StatusOK {
			t.Errorf("current key after the rotation: %d", r.status)
		}
	})
}

// totalReads counts every authorized secret read.
func (v *vaultStandIn) totalReads() int { return v.ReadCount("") }

// value is the current value of name.
func (v *vaultStandIn) value(name string) string { return v.Value(name) }

// remove deletes every version of name, as deleting the secret does.
func (v *vaultStandIn) remove(name string) { v.Remove(name) }

// rawKeyVersion reads the row as stored and returns the key version its
// refresh token was sealed with.
func (s *stack) rawKeyVersion(t *testing.T, userID string) string {
	t.Helper()
	svc, err := aztables.NewServiceClientFromConnectionString(s.tables, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := svc.NewClient("connections").GetEntity(context.Background(), userID, "microsoft", nil)
	if err != nil {
		t.Fatal(err)
	}
	var e map[string]any
	if err := json.Unmarshal(resp.Value, &e); err != nil {
		t.Fatal(err)
	}
	sealed, _ := e["RefreshTokenSealed"].(string)
	parts := strings.SplitN(sealed, ".", 3)
	if len(parts) != 3 || parts[0] != "v1" {
		t.Fatalf("RefreshTokenSealed is not a sealed value: %.20q", sealed)
	}
	return parts[1]
}
