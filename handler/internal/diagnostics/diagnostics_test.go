package diagnostics

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/clocktest"
	"github.com/megdocs/msconnector/handler/internal/config"
	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/msidentity"
	"github.com/megdocs/msconnector/handler/internal/secrets"
)

// Unit tests of the classification and the cache with fakes; the checks
// against real Azurite, devidp and the Key Vault stand-in are in
// faulttest/diagnostics_test.go and cmd/verify.

type fakeTables struct {
	probe error
	last  connection.SweepRecord
	err   error
}

func (f *fakeTables) Probe(context.Context) error { return f.probe }
func (f *fakeTables) LastSweep(context.Context) (connection.SweepRecord, error) {
	return f.last, f.err
}

type fakeCredential struct {
	calls atomic.Int32
	hold  chan struct{}
	err   error
}

func (f *fakeCredential) CheckCredential(context.Context, string) error {
	f.calls.Add(1)
	if f.hold != nil {
		<-f.hold
	}
	return f.err
}

var t0 = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func goodSettings() map[string]string {
	return map[string]string{
		"TABLES_CONNECTION_STRING": "UseDevelopmentStorage=true", "MICROSOFT_CLIENT_ID": "11111111-2222-4333-8444-555555555555",
		"MICROSOFT_OAUTH_CALLBACK_URL": "http://localhost:7071/api/callback", "ALLOWED_RETURN_URLS": "http://localhost/",
		"MICROSOFT_APP_TENANT_ID": "4a6f2c1e-8b3d-4e7f-9a0c-5d1b2e3f4a6b",
		"MICROSOFT_CLIENT_SECRET": "unit-client-secret", "TOKEN_ENCRYPTION_KEY": "ZmFrZS1sb2NhbC1rZXktZmFrZS1sb2NhbC1rZXktISE=", "CMS_API_KEY": "unit-cms-key",
	}
}

func newService(settings map[string]string, clk *clocktest.Clock, tables *fakeTables, cred *fakeCredential) *Service {
	s := &Service{Config: config.Load(env(settings)), Secrets: secrets.NewEnv(env(settings)), SecretsFromEnv: true, Now: clk.Now}
	if tables != nil {
		s.Tables = tables
	}
	if cred != nil {
		s.Credential = cred
	}
	return s
}

func find(t *testing.T, r Report, name string) Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %s", name)
	return Check{}
}

func healthyTables(now time.Time) *fakeTables {
	return &fakeTables{last: connection.SweepRecord{FinishedAt: now.Add(-3 * time.Minute), Due: 12, Refreshed: 12,
		Connections: map[connection.Status]int64{connection.StatusConnected: 840, connection.StatusReconnectRequired: 12}}}
}

func TestHealthy(t *testing.T) {
	clk := clocktest.New(t0)
	r := newService(goodSettings(), clk, healthyTables(t0), &fakeCredential{}).Report(context.Background())
	if !r.OK {
		t.Fatalf("not ok: %+v", r)
	}
	if c := find(t, r, CheckTimer); c.Detail != "last sweep 3 minutes ago (2026-12-02T11:57:00Z): 12 due, 12 refreshed, 0 reconnect_required, 0 transient failures, 0 skipped, 0 ms" {
		t.Errorf("timer detail = %q", c.Detail)
	}
	if c := find(t, r, CheckConnections); !strings.HasPrefix(c.Detail, "840 connected, 12 reconnect_required, 0 missing a required scope") {
		t.Errorf("connections detail = %q", c.Detail)
	}
	for _, c := range r.Checks {
		if c.Fix != "" {
			t.Errorf("%s is ok but has fix %q", c.Name, c.Fix)
		}
	}
}

func TestCredentialClassification(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		detail string
		fix    string
	}{
		{"app not found", &msidentity.Error{Code: "unauthorized_client", ErrorCodes: []int{700016}}, "AADSTS700016", "Application not found"},
		{"wrong secret", &msidentity.Error{Code: "invalid_client", ErrorCodes: []int{7000215}}, "AADSTS7000215", "Invalid client secret: verify"},
		{"expired secret", &msidentity.Error{Code: "invalid_client", ErrorCodes: []int{7000222}}, "AADSTS7000222: the client secret has expired", "Create a new client secret"},
		{"expired assertion", &msidentity.Error{Code: "invalid_client", ErrorCodes: []int{700024}}, "AADSTS700024", "federated credential"},
		{"assertion mismatch", &msidentity.Error{Code: "invalid_client", ErrorCodes: []int{70021}}, "AADSTS70021", "api://AzureADTokenExchange"},
		{"no federated record", &msidentity.Error{Code: "invalid_client", ErrorCodes: []int{700213}}, "AADSTS700213", "federated credential"},
		{"throttled", &msidentity.Error{Code: msidentity.CodeThrottled, Delay: 42 * time.Second}, "throttling", "Wait"},
		{"network", &msidentity.Error{Code: msidentity.CodeNetworkError, Err: &url.Error{Op: "Post", URL: "https://login", Err: errors.New("refused")}}, "no answer from", "MICROSOFT_AUTHORITY_HOST"},
		{"other code", &msidentity.Error{Code: "invalid_request", ErrorCodes: []int{90002}, HTTPStatus: 400}, "invalid_request AADSTS90002 (HTTP 400)", "error reference"},
		{"secret unreadable", &secrets.NotConfiguredError{Name: "microsoft-client-secret", Reason: "Key Vault refused (403)"}, "client secret cannot be read: Key Vault refused (403)", "secret:microsoft-client-secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newService(goodSettings(), clocktest.New(t0), healthyTables(t0), &fakeCredential{err: tc.err}).Report(context.Background())
			c := find(t, r, CheckCredential)
			if c.OK || r.OK || !strings.Contains(c.Detail, tc.detail) || !strings.Contains(c.Fix, tc.fix) {
				t.Errorf("check = %+v (report ok %v), want detail ~%q fix ~%q", c, r.OK, tc.detail, tc.fix)
			}
		})
	}
}

func TestMissingParts(t *testing.T) {
	settings := goodSettings()
	delete(settings, "TABLES_CONNECTION_STRING")
	delete(settings, "MICROSOFT_CLIENT_SECRET")
	settings["MICROSOFT_APP_TENANT_ID"] = "common"
	r := newService(settings, clocktest.New(t0), nil, nil).Report(context.Background())
	if c := find(t, r, CheckConfiguration); c.OK || !strings.Contains(c.Detail, "TABLES_ENDPOINT") || !strings.Contains(c.Detail, "MICROSOFT_APP_TENANT_ID") {
		t.Errorf("configuration = %+v", c)
	}
	if c := find(t, r, "secret:microsoft-client-secret"); c.OK || !strings.Contains(c.Detail, "MICROSOFT_CLIENT_SECRET is not set") || !strings.Contains(c.Fix, "MICROSOFT_CLIENT_SECRET") {
		t.Errorf("client secret = %+v", c)
	}
	for _, name := range []string{CheckTableStorage, CheckCredential, CheckTimer, CheckConnections} {
		if c := find(t, r, name); c.OK || c.Fix == "" {
			t.Errorf("%s = %+v, want failing with a fix", name, c)
		}
	}

	// Managed identity: no client secret is needed or checked; a webhook
	// adds its secret.
	settings = goodSettings()
	settings["MICROSOFT_CLIENT_AUTH"], settings["AZURE_CLIENT_ID"] = "managed_identity", "99999999-8888-4777-8666-555555555555"
	settings["CMS_WEBHOOK_URL"] = "https://cms.example.com/hook"
	r = newService(settings, clocktest.New(t0), healthyTables(t0), &fakeCredential{}).Report(context.Background())
	var names []string
	for _, c := range r.Checks {
		names = append(names, c.Name)
	}
	if got := strings.Join(names, ","); got != "configuration,secret:token-encryption-key,secret:cms-api-key,secret:cms-webhook-secret,table_storage,microsoft_credential,timer,connections" {
		t.Errorf("checks = %s", got)
	}
	if c := find(t, r, "secret:cms-webhook-secret"); c.OK {
		t.Errorf("an unset webhook secret is ok: %+v", c)
	}
	// A malformed encryption key is readable but unusable.
	settings = goodSettings()
	settings["TOKEN_ENCRYPTION_KEY"] = "dG9vIHNob3J0"
	r = newService(settings, clocktest.New(t0), healthyTables(t0), &fakeCredential{}).Report(context.Background())
	if c := find(t, r, "secret:token-encryption-key"); c.OK || !strings.Contains(c.Fix, "openssl rand -base64 32") {
		t.Errorf("short key = %+v", c)
	}
}

// At most once per TTL, and concurrent callers share one computation.
func TestCache(t *testing.T) {
	clk := clocktest.New(t0)
	cred := &fakeCredential{hold: make(chan struct{})}
	s := newService(goodSettings(), clk, healthyTables(t0), cred)
	var wg sync.WaitGroup
	reports := make([]Report, 10)
	for i := range reports {
		wg.Add(1)
		go func() { defer wg.Done(); reports[i] = s.Report(context.Background()) }()
	}
	for cred.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // let the others queue behind it
	close(cred.hold)
	wg.Wait()
	if n := cred.calls.Load(); n != 1 {
		t.Errorf("10 concurrent callers made %d computations, want 1", n)
	}
	for _, r := range reports {
		if !r.CheckedAt.Equal(t0) || len(r.Checks) != 8 {
			t.Fatalf("a caller got %+v", r)
		}
	}
	clk.Advance(59 * time.Second)
	s.Report(context.Background())
	if n := cred.calls.Load(); n != 1 {
		t.Errorf("within the minute: %d computations, want 1", n)
	}
	clk.Advance(time.Second)
	if r := s.Report(context.Background()); !r.CheckedAt.Equal(t0.Add(time.Minute)) || cred.calls.Load() != 2 {
		t.Errorf("after the minute: checked_at %s, %d computations; want a new one", r.CheckedAt, cred.calls.Load())
	}
	// A caller that gives up does not cancel the shared computation.
	cred.hold = make(chan struct{})
	clk.Advance(time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Report)
	go func() { done <- s.Report(ctx) }()
	for cred.calls.Load() != 3 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	close(cred.hold)
	if r := s.Report(context.Background()); !r.CheckedAt.Equal(t0.Add(2*time.Minute)) || !r.OK {
		t.Errorf("after a caller gave up: %+v", r)
	}
}

// A setting's value quoted in a problem keeps no query or user info.
func TestConfigurationDetailHidesURLCredentials(t *testing.T) {
	settings := goodSettings()
	settings["CMS_WEBHOOK_URL"] = "http://cms.example.com/hook?code=webhook-function-key"
	settings["ALLOWED_RETURN_URLS"] = "https://admin:hunter2@cms.example.com/"
	r := newService(settings, clocktest.New(t0), healthyTables(t0), &fakeCredential{}).Report(context.Background())
	c := find(t, r, CheckConfiguration)
	if c.OK || !strings.Contains(c.Detail, "CMS_WEBHOOK_URL") || !strings.Contains(c.Detail, "ALLOWED_RETURN_URLS") {
		t.Fatalf("configuration = %+v", c)
	}
	for _, secret := range []string{"webhook-function-key", "hunter2"} {
		if strings.Contains(c.Detail, secret) {
			t.Errorf("detail shows %q: %s", secret, c.Detail)
		}
	}
}
