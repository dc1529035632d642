package config

import (
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func valid() map[string]string {
	return map[string]string{
		"TABLES_CONNECTION_STRING":     "UseDevelopmentStorage=true",
		"MICROSOFT_CLIENT_ID":          "11111111-2222-3333-4444-555555555555",
		"MICROSOFT_OAUTH_CALLBACK_URL": "https://connector.example.com/api/callback",
		"ALLOWED_RETURN_URLS":          "https://audits.example.com/accounts/settings/, https://cms.example.org",
	}
}

func TestDefaults(t *testing.T) {
	c := Load(env(valid()))
	if err := c.Err(); err != nil {
		t.Fatalf("unexpected problems: %v", err)
	}
	if c.Port != "8080" || c.Tenant != "common" || c.AuthorityHost != "https://login.microsoftonline.com" || c.GraphURL != "https://graph.microsoft.com" {
		t.Errorf("defaults: %+v", c)
	}
	if got := strings.Join(c.Scopes, " "); got != "User.Read Files.ReadWrite.All offline_access" {
		t.Errorf("scopes = %q", got)
	}
	if c.Policy.Margin != 5*time.Minute || c.Policy.MaxAge != 24*time.Hour || c.Policy.Lookahead != 10*time.Minute {
		t.Errorf("policy = %+v", c.Policy)
	}
	if c.RefreshConcurrency != 16 || c.RefreshDeadline != 4*time.Minute || c.SecretsCacheTTL != 5*time.Minute {
		t.Errorf("refresh/secrets defaults: %d %s %s", c.RefreshConcurrency, c.RefreshDeadline, c.SecretsCacheTTL)
	}
	if c.PublicBaseURL != "https://connector.example.com" {
		t.Errorf("PublicBaseURL = %q", c.PublicBaseURL)
	}
	if c.CallbackPath() != "/api/callback" || !c.SecureCookies() {
		t.Errorf("cookie path %q secure %v", c.CallbackPath(), c.SecureCookies())
	}
	if len(c.AllowedReturnURLs) != 2 {
		t.Errorf("allowed = %v", c.AllowedReturnURLs)
	}
	if c.ClientAuth != ClientAuthSecret {
		t.Errorf("ClientAuth = %q", c.ClientAuth)
	}
}

func TestEveryProblemReportedTogether(t *testing.T) {
	c := Load(env(map[string]string{
		"MICROSOFT_OAUTH_CALLBACK_URL": "http://connector.example.com/api/callback",
		"MICROSOFT_TENANT":             "not a tenant!",
		"MICROSOFT_AUTHORITY_HOST":     "ftp://login.example.com",
		"MICROSOFT_GRAPH_URL":          "https://graph.microsoft.com/v1.0",
		"REFRESH_MARGIN":               "five minutes",
		"REFRESH_CONCURRENCY":          "0",
	}))
	want := []string{"TABLES_ENDPOINT", "MICROSOFT_CLIENT_ID", "MICROSOFT_OAUTH_CALLBACK_URL", "MICROSOFT_TENANT", "MICROSOFT_AUTHORITY_HOST", "MICROSOFT_GRAPH_URL", "REFRESH_MARGIN", "REFRESH_CONCURRENCY", "ALLOWED_RETURN_URLS"}
	msg := c.Err().Error()
	for _, name := range want {
		if !strings.Contains(msg, name) {
			t.Errorf("problems do not name %s:\n%s", name, msg)
		}
	}
	if got := c.Missing(AreaReturnURLs); len(got) != 1 || got[0].Setting != "ALLOWED_RETURN_URLS" {
		t.Errorf("Missing(return_urls) = %v", got)
	}
}

func TestLoopbackCallbackMayBePlainHTTP(t *testing.T) {
	for _, cb := range []string{"http://localhost:7071/api/callback", "http://127.0.0.1:7071/api/callback", "http://[::1]:7071/api/callback"} {
		m := valid()
		m["MICROSOFT_OAUTH_CALLBACK_URL"] = cb
		c := Load(env(m))
		if err := c.Err(); err != nil {
			t.Errorf("%s: %v", cb, err)
		}
		if c.SecureCookies() {
			t.Errorf("%s: cookies should not be Secure on loopback http", cb)
		}
	}
	m := valid()
	m["MICROSOFT_OAUTH_CALLBACK_URL"] = "http://127.0.0.2/api/callback"
	if Load(env(m)).Err() == nil {
		t.Error("plain http on 127.0.0.2 accepted; the contract lists only localhost, 127.0.0.1 and [::1]")
	}
}

func TestTenants(t *testing.T) {
	for tenant, ok := range map[string]bool{
		"common": true, "organizations": true, "consumers": true,
		"72f988bf-86f1-41af-91ab-2d7cd011db47": true, "contoso.onmicrosoft.com": true,
		"":        true, // default
		"contoso": false, "common/v2.0": false, "../common": false,
	} {
		m := valid()
		m["MICROSOFT_TENANT"] = tenant
		got := Load(env(m)).Missing(AreaMicrosoft)
		if ok != (len(got) == 0) {
			t.Errorf("tenant %q: problems %v", tenant, got)
		}
	}
}

func TestClientAuthDefault(t *testing.T) {
	m := valid()
	m["AZURE_CLIENT_ID"] = "99999999-2222-3333-4444-555555555555"
	if c := Load(env(m)); c.ClientAuth != ClientAuthManagedIdentity {
		t.Errorf("with AZURE_CLIENT_ID and no secret: %q", c.ClientAuth)
	}
	m["MICROSOFT_CLIENT_SECRET"] = "local-secret"
	if c := Load(env(m)); c.ClientAuth != ClientAuthSecret {
		t.Errorf("with a local secret: %q", c.ClientAuth)
	}
	m = valid()
	m["MICROSOFT_CLIENT_AUTH"] = "managed_identity"
	if got := Load(env(m)).Missing(AreaMicrosoft); len(got) != 1 || got[0].Setting != "AZURE_CLIENT_ID" {
		t.Errorf("managed_identity without AZURE_CLIENT_ID: %v", got)
	}
}

func TestScopesNeedOfflineAccess(t *testing.T) {
	m := valid()
	m["MICROSOFT_SCOPES"] = "User.Read Files.ReadWrite.All"
	if got := Load(env(m)).Missing(AreaMicrosoft); len(got) != 1 || got[0].Setting != "MICROSOFT_SCOPES" {
		t.Errorf("problems = %v", got)
	}
}

// The webhook needs its queue and the host's storage; WEBHOOK_QUEUE
// defaults to webhook-deliveries and must leave room for "-poison".
func TestWebhookQueueSettings(t *testing.T) {
	tests := []struct {
		name    string
		set     map[string]string
		problem string // the setting named, "" for none
		queue   string
	}{
		{"no webhook: nothing needed", map[string]string{}, "", DefaultWebhookQueue},
		{"connection string", map[string]string{"CMS_WEBHOOK_URL": "https://cms.example/hooks", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}, "", DefaultWebhookQueue},
		{"service URL", map[string]string{"CMS_WEBHOOK_URL": "https://cms.example/hooks", "AzureWebJobsStorage__queueServiceUri": "https://st.queue.core.windows.net/"}, "", DefaultWebhookQueue},
		{"no storage", map[string]string{"CMS_WEBHOOK_URL": "https://cms.example/hooks"}, "AzureWebJobsStorage__queueServiceUri", DefaultWebhookQueue},
		{"plain http service URL", map[string]string{"CMS_WEBHOOK_URL": "https://cms.example/hooks", "AzureWebJobsStorage__queueServiceUri": "http://st.queue.core.windows.net"}, "AzureWebJobsStorage__queueServiceUri", DefaultWebhookQueue},
		{"custom queue", map[string]string{"CMS_WEBHOOK_URL": "https://cms.example/hooks", "AzureWebJobsStorage": "x", "WEBHOOK_QUEUE": "hooks-2"}, "", "hooks-2"},
		{"upper case", map[string]string{"CMS_WEBHOOK_URL": "https://cms.example/hooks", "AzureWebJobsStorage": "x", "WEBHOOK_QUEUE": "Hooks"}, "WEBHOOK_QUEUE", "Hooks"},
		{"double hyphen", map[string]string{"CMS_WEBHOOK_URL": "https://cms.example/hooks", "AzureWebJobsStorage": "x", "WEBHOOK_QUEUE": "a--b"}, "WEBHOOK_QUEUE", "a--b"},
		{"no room for -poison", map[string]string{"CMS_WEBHOOK_URL": "https://cms.example/hooks", "AzureWebJobsStorage": "x", "WEBHOOK_QUEUE": strings.Repeat("q", 57)}, "WEBHOOK_QUEUE", strings.Repeat("q", 57)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := valid()
			for k, v := range tt.set {
				m[k] = v
			}
			c := Load(env(m))
			got := ""
			for _, p := range c.Missing(AreaWebhook) {
				got = p.Setting
			}
			if got != tt.problem {
				t.Errorf("problem with %q, want %q (%v)", got, tt.problem, c.Problems)
			}
			if c.WebhookQueue != tt.queue {
				t.Errorf("WebhookQueue = %q", c.WebhookQueue)
			}
		})
	}
	if c := Load(env(map[string]string{"AzureWebJobsStorage__queueServiceUri": "https://st.queue.core.windows.net/"})); c.QueueServiceURL != "https://st.queue.core.windows.net" {
		t.Errorf("QueueServiceURL = %q", c.QueueServiceURL)
	}
}

// TestSettingsListsWhatLoadReads: Settings (the list the infra cross-checks
// and the docs follow) names every variable Load reads, but the client
// secret (a secret, which the secrets package owns; Load only looks whether
// it is set), and hands each caller its own copy.
func TestSettingsListsWhatLoadReads(t *testing.T) {
	read := map[string]bool{}
	withMI := valid()
	withMI["AZURE_CLIENT_ID"] = "11111111-2222-3333-4444-555555555555"
	for _, m := range []map[string]string{valid(), withMI} {
		Load(func(k string) string { read[k] = true; return m[k] })
	}
	if !read["MICROSOFT_CLIENT_SECRET"] {
		t.Error("Load never looked at MICROSOFT_CLIENT_SECRET: this test no longer covers the managed identity default")
	}
	delete(read, "MICROSOFT_CLIENT_SECRET")
	listed := map[string]bool{}
	for _, s := range Settings() {
		listed[s.Name] = true
	}
	for k := range read {
		if !listed[k] {
			t.Errorf("Load reads %s, which Settings does not list", k)
		}
	}
	for k := range listed {
		if !read[k] {
			t.Errorf("Settings lists %s, which Load does not read", k)
		}
	}
	s := Settings()
	s[0].Name = "CHANGED"
	if got := Settings()[0].Name; got == "CHANGED" {
		t.Error("a change to one caller's Settings() reached the next caller")
	}
}
