package faulttest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/devidp"
	"github.com/megdocs/msconnector/handler/internal/diagnostics"
	"github.com/megdocs/msconnector/handler/internal/secrets"
)

// GET /api/diagnostics through the whole product: the real app with its
// Table Storage (Azurite), Microsoft (devidp) and Key Vault (the stand-in).

var diagTenant = map[string]string{"MICROSOFT_APP_TENANT_ID": devidp.ContosoTenantID}

func (s *stack) diagnostics(t *testing.T) (diagnostics.Report, []byte) {
	t.Helper()
	r := s.do(t, http.MethodGet, "/api/diagnostics", nil, nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET /api/diagnostics: %d %s", r.status, r.body)
	}
	var rep diagnostics.Report
	if err := json.Unmarshal(r.body, &rep); err != nil {
		t.Fatalf("diagnostics body: %v\n%s", err, r.body)
	}
	// The contract: ok exactly when every check is; a failing check has fix.
	all := true
	for _, c := range rep.Checks {
		all = all && c.OK
		if !c.OK && c.Fix == "" {
			t.Errorf("%s failed without fix: %+v", c.Name, c)
		}
	}
	if rep.OK != all {
		t.Errorf("ok = %v, but every check ok = %v", rep.OK, all)
	}
	return rep, r.body
}

func check(t *testing.T, rep diagnostics.Report, name string) diagnostics.Check {
	t.Helper()
	for _, c := range rep.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %q in %+v", name, rep.Checks)
	return diagnostics.Check{}
}

func wantCheck(t *testing.T, rep diagnostics.Report, name string, ok bool, detail, fix string) {
	t.Helper()
	c := check(t, rep, name)
	if c.OK != ok || !strings.Contains(c.Detail, detail) || !strings.Contains(c.Fix, fix) {
		t.Errorf("%s = %+v, want ok=%v, detail containing %q, fix containing %q", name, c, ok, detail, fix)
	}
}

// noSecrets fails t when body holds any of values (or their base64).
func noSecrets(t *testing.T, body []byte, values ...string) {
	t.Helper()
	for _, v := range values {
		if v == "" {
			continue
		}
		if strings.Contains(string(body), v) || strings.Contains(string(body), base64.StdEncoding.EncodeToString([]byte(v))) {
			t.Errorf("the diagnostics body contains a secret or token (%d characters)", len(v))
		}
	}
}

func TestDiagnosticsGreenCachedAndSecretFree(t *testing.T) {
	clientSecret, encKey := randomString(32), base64.StdEncoding.EncodeToString([]byte(randomString(24))[:32])
	s := start(t, options{settings: map[string]string{
		"MICROSOFT_APP_TENANT_ID": devidp.ContosoTenantID,
		secrets.EnvClientSecret:   clientSecret,
		secrets.EnvEncryptionKey:  encKey,
	}})
	// The app now sends this test's secret; the seeding client the
	// harness's. Both are the app registration's.
	s.idp.SetClientSecrets(clientSecret, s.idpSecret(t))
	conns := s.seed(t, 0, 2)
	s.sweep(t)

	before := s.idp.TokenRequests("client_credentials")
	rep, body := s.diagnostics(t)
	var names []string
	for _, c := range rep.Checks {
		names = append(names, c.Name)
	}
	want := "configuration,secret:microsoft-client-secret,secret:token-encryption-key,secret:cms-api-key,table_storage,microsoft_credential,timer,connections"
	if strings.Join(names, ",") != want {
		t.Errorf("checks = %s, want %s", strings.Join(names, ","), want)
	}
	if !rep.OK {
		t.Fatalf("ok = false on a healthy stack:\n%s", body)
	}
	wantCheck(t, rep, "secret:cms-api-key", true, "environment variable CMS_API_KEY", "")
	wantCheck(t, rep, "table_storage", true, "probe row written, read and deleted", "")
	wantCheck(t, rep, "microsoft_credential", true, "/.default issued by tenant "+devidp.ContosoTenantID, "")
	wantCheck(t, rep, "timer", true, "2 due, 2 refreshed", "")
	wantCheck(t, rep, "connections", true, "2 connected, 0 reconnect_required, 0 missing a required scope", "")
	if got := s.idp.TokenRequests("client_credentials") - before; got != 1 {
		t.Errorf("one report made %d client-credentials requests, want 1", got)
	}
	secretsAndTokens := []string{clientSecret, encKey, s.cmsKey, s.idpSecret(t)}
	for _, c := range conns {
		secretsAndTokens = append(secretsAndTokens, c.seedRT, c.seedAT)
	}
	noSecrets(t, body, secretsAndTokens...)

	// Within the minute: the same report, nothing asked again.
	again, _ := s.diagnostics(t)
	if !again.CheckedAt.Equal(rep.CheckedAt) {
		t.Errorf("second call within a minute: checked_at %s, want the cached %s", again.CheckedAt, rep.CheckedAt)
	}
	if got := s.idp.TokenRequests("client_credentials") - before; got != 1 {
		t.Errorf("a second call within a minute asked Microsoft again (%d requests in all)", got)
	}

	// After the minute, concurrent callers share one computation.
	s.clock.Advance(61 * time.Second)
	var wg sync.WaitGroup
	at := make([]time.Time, 8)
	for i := range at {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, _ := s.diagnostics(t)
			at[i] = r.CheckedAt
		}()
	}
	wg.Wait()
	for _, a := range at {
		if !a.Equal(at[0]) || !a.After(rep.CheckedAt) {
			t.Errorf("concurrent calls after the minute: checked_at %v, want one new computation", at)
			break
		}
	}
	if got := s.idp.TokenRequests("client_credentials") - before; got != 2 {
		t.Errorf("8 concurrent calls after the minute made %d client-credentials requests in all, want 2", got)
	}
}

// idpSecret is the client secret the harness configured devidp with (the
// seeding client sends it).
func (s *stack) idpSecret(*testing.T) string { return s.clientSecret }

func TestDiagnosticsCredentialFailures(t *testing.T) {
	s := start(t, options{settings: diagTenant})
	s.sweep(t)
	rep, _ := s.diagnostics(t)
	wantCheck(t, rep, "microsoft_credential", true, "issued by tenant", "")

	// "Invalid client secret": the app registration no longer has it.
	s.idp.SetClientSecrets("not-the-apps-secret")
	s.clock.Advance(61 * time.Second)
	rep, _ = s.diagnostics(t)
	wantCheck(t, rep, "microsoft_credential", false, "AADSTS7000215", "Invalid client secret: verify the client secret is correct")
	if rep.OK {
		t.Error("ok = true with a failing credential check")
	}

	// The secret expired (the stand-in's planted expiry).
	s.idp.SetClientSecrets(s.idpSecret(t))
	s.idp.ExpireClientSecrets()
	s.clock.Advance(61 * time.Second)
	rep, body := s.diagnostics(t)
	wantCheck(t, rep, "microsoft_credential", false, "AADSTS7000222: the client secret has expired", "Create a new client secret in the app registration")
	noSecrets(t, body, s.idpSecret(t), s.cmsKey)
}

func TestDiagnosticsCredentialTenant(t *testing.T) {
	t.Run("wrong tenant: application not found", func(t *testing.T) {
		s := start(t, options{settings: map[string]string{"MICROSOFT_APP_TENANT_ID": "0f0f0f0f-1111-4222-8333-444455556666"}})
		rep, _ := s.diagnostics(t)
		wantCheck(t, rep, "microsoft_credential", false, "AADSTS700016", "Application not found: verify MICROSOFT_CLIENT_ID is correct")
	})
	t.Run("no MICROSOFT_APP_TENANT_ID: not configured", func(t *testing.T) {
		s := start(t, options{})
		before := s.idp.TokenRequests("client_credentials")
		rep, _ := s.diagnostics(t)
		wantCheck(t, rep, "microsoft_credential", false, "not configured: MICROSOFT_APP_TENANT_ID", "Set MICROSOFT_APP_TENANT_ID")
		wantCheck(t, rep, "configuration", true, "every setting present and valid", "")
		if s.idp.TokenRequests("client_credentials") != before {
			t.Error("a credential check was sent without a home tenant")
		}
	})
}

func TestDiagnosticsKeyVaultSecrets(t *testing.T) {
	v := newVaultStandIn(t)
	s := start(t, options{vault: v, settings: diagTenant})
	now := s.clock.Now()
	v.expires(secrets.ClientSecret, now.Add(10*24*time.Hour+time.Hour))
	v.expires(secrets.CMSAPIKey, now.Add(200*24*time.Hour+time.Hour))
	s.sweep(t)
	rep, body := s.diagnostics(t)

	version := v.Current(secrets.ClientSecret)[:8] + "..."
	wantCheck(t, rep, "secret:microsoft-client-secret", false, "version "+version+", expires "+now.Add(10*24*time.Hour+time.Hour).UTC().Format("2006-01-02")+" (10 days)", "Rotate secrets before they expire")
	wantCheck(t, rep, "secret:cms-api-key", true, "(200 days)", "")
	wantCheck(t, rep, "secret:token-encryption-key", true, "version "+keyVersion1[:8]+"..., no expiry set", "")
	wantCheck(t, rep, "microsoft_credential", true, "issued by tenant", "")
	if rep.OK {
		t.Error("ok = true with a client secret expiring within 14 days")
	}
	for _, value := range v.Values() {
		noSecrets(t, body, value)
	}
}

func TestDiagnosticsTableStorageRefused(t *testing.T) {
	s := start(t, options{settings: diagTenant})
	s.sweep(t)
	body, _ := json.Marshal(map[string]any{"odata.error": map[string]any{"code": "AuthorizationPermissionMismatch", "message": map[string]string{"lang": "en-US", "value": "This request is not authorized to perform this operation using this permission."}}})
	h := http.Header{"Content-Type": {"application/json;odata=minimalmetadata"}, "X-Ms-Error-Code": {"AuthorizationPermissionMismatch"}}
	s.inj.Add(&Rule{Dependency: Tables, Fault: Status(http.StatusForbidden, h, body)})
	rep, _ := s.diagnostics(t)
	wantCheck(t, rep, "table_storage", false, "HTTP 403 AuthorizationPermissionMismatch", "Storage Table Data Contributor")
	wantCheck(t, rep, "timer", false, "cannot be read", "table_storage")
	if rep.OK {
		t.Error("ok = true while Table Storage refuses")
	}
}

func TestDiagnosticsTimer(t *testing.T) {
	s := start(t, options{settings: diagTenant})
	rep, _ := s.diagnostics(t)
	wantCheck(t, rep, "timer", false, "no sweep has finished yet", "REFRESH_SCHEDULE")
	wantCheck(t, rep, "connections", false, "not counted yet", "")

	s.sweep(t)
	s.clock.Advance(61 * time.Second)
	rep, _ = s.diagnostics(t)
	wantCheck(t, rep, "timer", true, "last sweep 1 minute ago", "")

	s.clock.Advance(61 * time.Minute)
	rep, _ = s.diagnostics(t)
	wantCheck(t, rep, "timer", false, "last sweep 62 minutes ago", "has not finished a sweep in the last hour")
}

// The sweep counts statuses and missing scopes as it lists, stores them
// in Table Storage, and another instance (or a restarted one) reports them
// without sweeping or scanning itself.
func TestDiagnosticsSweepCountsSurviveARestart(t *testing.T) {
	a := start(t, options{settings: diagTenant})
	a.seed(t, 0, 2)
	ctx := context.Background()
	now := a.clock.Now()
	for _, c := range []connection.Connection{
		// Granted without Files.ReadWrite.All: the guide's "Insufficient permissions".
		{UserID: "narrow-grant@example.com", Status: connection.StatusConnected, Scopes: []string{"User.Read", "offline_access"}},
		{UserID: "gone_user.1", Status: connection.StatusReconnectRequired, Scopes: scopes},
	} {
		c.Account = connection.Account{ID: "00000000-0000-4000-8000-0000000000aa", TenantID: devidp.ContosoTenantID}
		c.AccessToken, c.RefreshToken = "diag-at-"+randomString(8), "diag-rt-"+randomString(8)
		c.AccessTokenExpiresAt, c.LastRefreshedAt, c.ConnectedAt = now.Add(time.Hour), now, now
		if _, err := a.store.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	a.sweep(t)
	rep, _ := a.diagnostics(t)
	const counts = "3 connected, 1 reconnect_required, 1 missing a required scope"
	wantCheck(t, rep, "connections", false, counts, "Insufficient permissions: verify all permissions of MICROSOFT_SCOPES are added")
	timerA := check(t, rep, "timer")

	// A new instance over the same tables (other keys: it cannot open a
	// token, and needs none) reports the same last sweep.
	b := start(t, options{settings: map[string]string{"MICROSOFT_APP_TENANT_ID": devidp.ContosoTenantID, "TABLES_CONNECTION_STRING": a.tables}})
	repB, _ := b.diagnostics(t)
	wantCheck(t, repB, "connections", false, counts, "Insufficient permissions")
	if got := check(t, repB, "timer"); got.Detail != timerA.Detail || !got.OK {
		t.Errorf("restarted instance's timer = %+v, want the recorded sweep %q", got, timerA.Detail)
	}
}
