// Package config reads every setting once, at start, into a typed struct and
// validates them together, so an admin sees every problem in one log line.
// It never reads secrets (package secrets does) and never fails the process:
// problems are recorded per area, and the routes that need an area answer
// 503 not_configured while the rest keep working.
package config

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// Area groups settings by what breaks when they are wrong.
type Area string

const (
	// AreaStorage: Table Storage; every CMS route and the timer need it.
	AreaStorage Area = "storage"
	// AreaMicrosoft: the identity platform; connect, callback, token, timer.
	AreaMicrosoft Area = "microsoft"
	// AreaReturnURLs: the allowlist; POST /api/connect-sessions.
	AreaReturnURLs Area = "return_urls"
	// AreaRefresh: the REFRESH_* policy; token API and timer.
	AreaRefresh Area = "refresh"
	// AreaWebhook: CMS_WEBHOOK_URL, WEBHOOK_QUEUE and the host's storage
	// (AzureWebJobsStorage or AzureWebJobsStorage__queueServiceUri).
	AreaWebhook Area = "webhook"
	// AreaDiagnostics: MICROSOFT_APP_TENANT_ID; only GET /api/diagnostics
	// uses it (its credential check).
	AreaDiagnostics Area = "diagnostics"
)

// Problem is one missing or malformed setting.
type Problem struct {
	Setting string
	Area    Area
	Reason  string
}

func (p Problem) String() string { return p.Setting + ": " + p.Reason }

// Client authentication modes (MICROSOFT_CLIENT_AUTH).
const (
	ClientAuthSecret          = "secret"
	ClientAuthManagedIdentity = "managed_identity"
)

// Config is every setting the handler reads.
type Config struct {
	Port string // FUNCTIONS_CUSTOMHANDLER_PORT

	KeyVaultURL            string
	TablesEndpoint         string
	TablesConnectionString string

	ClientID      string
	CallbackURL   string // verbatim: it must equal the registered redirect URI
	Tenant        string
	AuthorityHost string // no trailing slash
	GraphURL      string // no trailing slash
	Scopes        []string
	ClientAuth    string
	AzureClientID string
	AppTenantID   string // MICROSOFT_APP_TENANT_ID: the app registration's home tenant

	AllowedReturnURLs []string
	PublicBaseURL     string // no trailing slash

	Policy             connection.Policy
	RefreshConcurrency int
	RefreshDeadline    time.Duration

	WebhookURL string
	// WebhookQueue is WEBHOOK_QUEUE; its poison queue is
	// WebhookQueue + "-poison".
	WebhookQueue string
	// QueueConnectionString is AzureWebJobsStorage (Azurite, development);
	// QueueServiceURL is AzureWebJobsStorage__queueServiceUri (Azure, with
	// the managed identity). The host's own storage account: the one its
	// queue trigger reads.
	QueueConnectionString string
	QueueServiceURL       string
	SecretsCacheTTL       time.Duration

	// Host is what host.json says (functionTimeout), read by Load.
	Host Host

	Problems []Problem
}

// Setting documents one environment variable the handler reads. The infra
// cross-check test compares this list with the Bicep app settings.
type Setting struct {
	Name     string
	Default  string
	Required bool
}

// Settings returns every variable Load reads, in the contract's order: a
// fresh copy, so no caller can change what another sees.
func Settings() []Setting { return slices.Clone(settings) }

// settings is Settings' list. The infra cross-checks read its literal
// (Name and Default) from this source.
var settings = []Setting{
	{Name: "FUNCTIONS_CUSTOMHANDLER_PORT", Default: "8080"},
	{Name: "KEY_VAULT_URL"},
	{Name: "TABLES_ENDPOINT"},
	{Name: "TABLES_CONNECTION_STRING"},
	{Name: "MICROSOFT_CLIENT_ID", Required: true},
	{Name: "MICROSOFT_OAUTH_CALLBACK_URL", Required: true},
	{Name: "MICROSOFT_TENANT", Default: "common"},
	{Name: "MICROSOFT_APP_TENANT_ID"},
	{Name: "MICROSOFT_AUTHORITY_HOST", Default: "https://login.microsoftonline.com"},
	{Name: "MICROSOFT_GRAPH_URL", Default: "https://graph.microsoft.com"},
	{Name: "MICROSOFT_SCOPES", Default: "User.Read Files.ReadWrite.All offline_access"},
	{Name: "MICROSOFT_CLIENT_AUTH", Default: "managed_identity when AZURE_CLIENT_ID is set and MICROSOFT_CLIENT_SECRET is not, else secret"},
	{Name: "AZURE_CLIENT_ID"},
	{Name: "ALLOWED_RETURN_URLS", Required: true},
	{Name: "PUBLIC_BASE_URL", Default: "derived from MICROSOFT_OAUTH_CALLBACK_URL"},
	{Name: "REFRESH_MARGIN", Default: "5m"},
	{Name: "REFRESH_MAX_AGE", Default: "24h"},
	{Name: "REFRESH_LOOKAHEAD", Default: "10m"},
	{Name: "REFRESH_CONCURRENCY", Default: "16"},
	{Name: "REFRESH_DEADLINE", Default: "4m"},
	{Name: "CMS_WEBHOOK_URL"},
	{Name: "WEBHOOK_QUEUE", Default: DefaultWebhookQueue},
	{Name: "AzureWebJobsStorage"},
	{Name: "AzureWebJobsStorage__queueServiceUri"},
	{Name: "SECRETS_CACHE_TTL", Default: "5m"},
}

// Load reads and validates every setting, and host.json's functionTimeout
// from HostFiles. It never fails: see Problems.
func Load(getenv func(string) string) Config {
	return LoadWithHost(getenv, ReadHost(HostFiles()...))
}

// LoadWithHost is Load with host.json already read (tests inject one).
func LoadWithHost(getenv func(string) string, host Host) Config {
	l := loader{getenv: getenv}
	c := Config{
		Host:                   host,
		Port:                   l.str("FUNCTIONS_CUSTOMHANDLER_PORT", "8080"),
		KeyVaultURL:            strings.TrimRight(l.str("KEY_VAULT_URL", ""), "/"),
		TablesEndpoint:         strings.TrimRight(l.str("TABLES_ENDPOINT", ""), "/"),
		TablesConnectionString: l.str("TABLES_CONNECTION_STRING", ""),
		ClientID:               l.str("MICROSOFT_CLIENT_ID", ""),
		CallbackURL:            l.str("MICROSOFT_OAUTH_CALLBACK_URL", ""),
		Tenant:                 l.str("MICROSOFT_TENANT", "common"),
		AuthorityHost:          strings.TrimRight(l.str("MICROSOFT_AUTHORITY_HOST", "https://login.microsoftonline.com"), "/"),
		GraphURL:               strings.TrimRight(l.str("MICROSOFT_GRAPH_URL", "https://graph.microsoft.com"), "/"),
		Scopes:                 strings.Fields(l.str("MICROSOFT_SCOPES", "User.Read Files.ReadWrite.All offline_access")),
		AzureClientID:          l.str("AZURE_CLIENT_ID", ""),
		AppTenantID:            l.str("MICROSOFT_APP_TENANT_ID", ""),
		WebhookURL:             l.str("CMS_WEBHOOK_URL", ""),
		WebhookQueue:           l.str("WEBHOOK_QUEUE", DefaultWebhookQueue),
		QueueConnectionString:  l.str("AzureWebJobsStorage", ""),
		QueueServiceURL:        strings.TrimRight(l.str("AzureWebJobsStorage__queueServiceUri", ""), "/"),
	}
	c.Policy = connection.DefaultPolicy()
	c.Policy.Margin = l.duration("REFRESH_MARGIN", AreaRefresh, c.Policy.Margin, 0, 59*time.Minute)
	c.Policy.MaxAge = l.duration("REFRESH_MAX_AGE", AreaRefresh, c.Policy.MaxAge, 5*time.Minute, 80*24*time.Hour)
	c.Policy.Lookahead = l.duration("REFRESH_LOOKAHEAD", AreaRefresh, c.Policy.Lookahead, 0, 59*time.Minute)
	c.RefreshConcurrency = l.integer("REFRESH_CONCURRENCY", AreaRefresh, 16, 1, 256)
	// The real upper bound is host.json's functionTimeout (validateHost).
	c.RefreshDeadline = l.duration("REFRESH_DEADLINE", AreaRefresh, 4*time.Minute, 10*time.Second, 24*time.Hour)
	c.SecretsCacheTTL = l.duration("SECRETS_CACHE_TTL", AreaStorage, 5*time.Minute, time.Second, 24*time.Hour)

	if _, err := strconv.Atoi(c.Port); err != nil {
		l.problem("FUNCTIONS_CUSTOMHANDLER_PORT", AreaStorage, "not a port number")
		c.Port = "8080"
	}
	l.validateStorage(&c)
	l.validateMicrosoft(&c)
	l.validateReturnURLs(&c)
	if t := c.AppTenantID; t != "" && !connection.IsGUID(t) && !domainRE.MatchString(t) {
		l.problem("MICROSOFT_APP_TENANT_ID", AreaDiagnostics, fmt.Sprintf("%q is not a tenant: use the Directory (tenant) ID of the tenant holding the app registration", t))
	}
	l.validateHost(&c)
	if c.WebhookURL != "" {
		if err := checkURL(c.WebhookURL, false); err != nil {
			l.problem("CMS_WEBHOOK_URL", AreaWebhook, err.Error())
		}
		l.validateWebhookQueue(&c)
	}
	c.Problems = l.problems
	return c
}

// DefaultWebhookQueue is WEBHOOK_QUEUE's default.
const DefaultWebhookQueue = "webhook-deliveries"

// queueName is Queue Storage's rule for queue names (3-63 characters,
// lower-case letters, digits and single inner hyphens), shortened by the
// "-poison" suffix the host appends for the poison queue.
var queueName = regexp.MustCompile(`^[a-z0-9]([a-z0-9]|-[a-z0-9])+$`)

const maxQueueName = 63 - len("-poison")

// validateWebhookQueue: deliveries need the queue and the host's storage
// account, the one its queue trigger reads.
func (l *loader) validateWebhookQueue(c *Config) {
	if !queueName.MatchString(c.WebhookQueue) || len(c.WebhookQueue) > maxQueueName {
		l.problem("WEBHOOK_QUEUE", AreaWebhook, fmt.Sprintf("%q is not a queue name (3-%d of a-z, 0-9 and single inner hyphens)", c.WebhookQueue, maxQueueName))
	}
	switch {
	case c.QueueConnectionString != "":
	case c.QueueServiceURL != "":
		if err := checkURL(c.QueueServiceURL, false); err != nil {
			l.problem("AzureWebJobsStorage__queueServiceUri", AreaWebhook, err.Error())
		}
	default:
		l.problem("AzureWebJobsStorage__queueServiceUri", AreaWebhook,
			"CMS_WEBHOOK_URL needs the host's storage for its delivery queue: AzureWebJobsStorage__queueServiceUri (Azure, managed identity) or AzureWebJobsStorage (a connection string)")
	}
}

// Missing lists the problems that affect any of the given areas.
func (c Config) Missing(areas ...Area) []Problem {
	var out []Problem
	for _, p := range c.Problems {
		for _, a := range areas {
			if p.Area == a {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// CallbackPath is the path the state cookie is scoped to.
func (c Config) CallbackPath() string {
	u, err := url.Parse(c.CallbackURL)
	if err != nil || u.Path == "" {
		return "/"
	}
	return u.Path
}

// SecureCookies: the state cookie is Secure unless the callback is plain
// http on a loopback host (local development).
func (c Config) SecureCookies() bool {
	u, err := url.Parse(c.CallbackURL)
	if err != nil {
		return true
	}
	return !(u.Scheme == "http" && isLoopback(u.Hostname()))
}

type loader struct {
	getenv   func(string) string
	problems []Problem
}

func (l *loader) problem(setting string, area Area, reason string) {
	l.problems = append(l.problems, Problem{Setting: setting, Area: area, Reason: reason})
}

func (l *loader) str(name, def string) string {
	if v := strings.TrimSpace(l.getenv(name)); v != "" {
		return v
	}
	return def
}

func (l *loader) duration(name string, area Area, def, min, max time.Duration) time.Duration {
	v := strings.TrimSpace(l.getenv(name))
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		l.problem(name, area, fmt.Sprintf("%q is not a duration like 5m or 24h", v))
		return def
	}
	if d < min || d > max {
		l.problem(name, area, fmt.Sprintf("%s is outside %s..%s", d, min, max))
		return def
	}
	return d
}

func (l *loader) integer(name string, area Area, def, min, max int) int {
	v := strings.TrimSpace(l.getenv(name))
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min || n > max {
		l.problem(name, area, fmt.Sprintf("%q is not a whole number from %d to %d", v, min, max))
		return def
	}
	return n
}

func (l *loader) validateStorage(c *Config) {
	switch {
	case c.TablesEndpoint == "" && c.TablesConnectionString == "":
		l.problem("TABLES_ENDPOINT", AreaStorage, "missing: set TABLES_ENDPOINT (managed identity) or TABLES_CONNECTION_STRING (Azurite, development)")
	case c.TablesEndpoint != "":
		if err := checkURL(c.TablesEndpoint, true); err != nil {
			l.problem("TABLES_ENDPOINT", AreaStorage, err.Error())
		}
	}
	if c.KeyVaultURL != "" {
		if err := checkURL(c.KeyVaultURL, false); err != nil {
			l.problem("KEY_VAULT_URL", AreaStorage, err.Error())
		}
	}
}

var (
	domainRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$`)
	scopeRE  = regexp.MustCompile(`^[\x21\x23-\x5B\x5D-\x7E]+$`) // RFC 6749 §3.3 scope-token
)

func (l *loader) validateMicrosoft(c *Config) {
	if c.ClientID == "" {
		l.problem("MICROSOFT_CLIENT_ID", AreaMicrosoft, "missing: the app registration's Application (client) ID")
	} else if !connection.IsGUID(c.ClientID) {
		l.problem("MICROSOFT_CLIENT_ID", AreaMicrosoft, "not a GUID: copy the Application (client) ID from the app registration")
	}
	if c.CallbackURL == "" {
		l.problem("MICROSOFT_OAUTH_CALLBACK_URL", AreaMicrosoft, "missing: the redirect URI registered in Azure, e.g. https://<app>.azurewebsites.net/api/callback")
	} else if err := checkURL(c.CallbackURL, false); err != nil {
		l.problem("MICROSOFT_OAUTH_CALLBACK_URL", AreaMicrosoft, err.Error())
	} else if u, _ := url.Parse(c.CallbackURL); u.RawQuery != "" || u.Fragment != "" {
		l.problem("MICROSOFT_OAUTH_CALLBACK_URL", AreaMicrosoft, "must not have a query or fragment")
	}
	switch t := c.Tenant; {
	case t == "common", t == "organizations", t == "consumers", connection.IsGUID(t), domainRE.MatchString(t):
	default:
		l.problem("MICROSOFT_TENANT", AreaMicrosoft, fmt.Sprintf("%q cannot work: use common, organizations, consumers, a tenant ID (GUID) or a verified domain", t))
	}
	if err := checkURL(c.AuthorityHost, false); err != nil {
		l.problem("MICROSOFT_AUTHORITY_HOST", AreaMicrosoft, err.Error())
	} else if u, _ := url.Parse(c.AuthorityHost); u.Path != "" {
		l.problem("MICROSOFT_AUTHORITY_HOST", AreaMicrosoft, "must be a bare host URL such as https://login.microsoftonline.com (no tenant or path)")
	}
	if err := checkURL(c.GraphURL, false); err != nil {
		l.problem("MICROSOFT_GRAPH_URL", AreaMicrosoft, err.Error())
	} else if u, _ := url.Parse(c.GraphURL); u.Path != "" {
		l.problem("MICROSOFT_GRAPH_URL", AreaMicrosoft, "must be a bare host URL such as https://graph.microsoft.com (no /v1.0)")
	}
	if len(c.Scopes) == 0 {
		l.problem("MICROSOFT_SCOPES", AreaMicrosoft, "empty")
	}
	hasOffline := false
	for _, s := range c.Scopes {
		if !scopeRE.MatchString(s) {
			l.problem("MICROSOFT_SCOPES", AreaMicrosoft, fmt.Sprintf("%q is not a valid scope", s))
		}
		if s == "offline_access" {
			hasOffline = true
		}
	}
	if len(c.Scopes) > 0 && !hasOffline {
		l.problem("MICROSOFT_SCOPES", AreaMicrosoft, "must include offline_access, or Microsoft returns no refresh token")
	}

	auth := strings.TrimSpace(l.getenv("MICROSOFT_CLIENT_AUTH"))
	switch auth {
	case ClientAuthSecret, ClientAuthManagedIdentity:
	case "":
		// Secretless by default when the app names a user-assigned identity
		// and nobody configured a secret in the environment (issue 8).
		auth = ClientAuthSecret
		if c.AzureClientID != "" && strings.TrimSpace(l.getenv("MICROSOFT_CLIENT_SECRET")) == "" {
			auth = ClientAuthManagedIdentity
		}
	default:
		l.problem("MICROSOFT_CLIENT_AUTH", AreaMicrosoft, fmt.Sprintf("%q: use secret or managed_identity", auth))
		auth = ClientAuthSecret
	}
	if auth == ClientAuthManagedIdentity && c.AzureClientID == "" {
		l.problem("AZURE_CLIENT_ID", AreaMicrosoft, "managed_identity client auth needs AZURE_CLIENT_ID: the client ID of the user-assigned identity that is a federated credential on the app")
	}
	c.ClientAuth = auth

	if v := strings.TrimRight(l.str("PUBLIC_BASE_URL", ""), "/"); v != "" {
		if err := checkURL(v, false); err != nil {
			l.problem("PUBLIC_BASE_URL", AreaMicrosoft, err.Error())
		}
		c.PublicBaseURL = v
	} else if u, err := url.Parse(c.CallbackURL); err == nil && u.Host != "" {
		base := u.Scheme + "://" + u.Host
		if p := strings.TrimSuffix(u.Path, "/"); strings.HasSuffix(p, "/api/callback") {
			base += strings.TrimSuffix(p, "/api/callback")
		}
		c.PublicBaseURL = base
	}
}

func (l *loader) validateReturnURLs(c *Config) {
	raw := strings.TrimSpace(l.getenv("ALLOWED_RETURN_URLS"))
	if raw == "" {
		l.problem("ALLOWED_RETURN_URLS", AreaReturnURLs, "missing: comma-separated URL prefixes the CMS may return to")
		return
	}
	for _, p := range strings.Split(raw, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if err := checkURL(p, false); err != nil {
			l.problem("ALLOWED_RETURN_URLS", AreaReturnURLs, fmt.Sprintf("%q: %v", p, err))
			continue
		}
		c.AllowedReturnURLs = append(c.AllowedReturnURLs, p)
	}
	if len(c.AllowedReturnURLs) == 0 {
		l.problem("ALLOWED_RETURN_URLS", AreaReturnURLs, "no usable prefix")
	}
}

// checkURL accepts absolute http(s) URLs; plain http only on loopback hosts
// unless allowHTTP (Azurite's endpoint is plain http).
func checkURL(raw string, allowHTTP bool) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("%q is not an absolute URL", raw)
	}
	if u.User != nil {
		return fmt.Errorf("%q must not contain user info", raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !allowHTTP && !isLoopback(u.Hostname()) {
			return fmt.Errorf("%q must use https (plain http is allowed only for localhost)", raw)
		}
	default:
		return fmt.Errorf("%q must be an https URL", raw)
	}
	return nil
}

// isLoopback is the contract's list exactly: localhost, 127.0.0.1, [::1].
func isLoopback(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}
