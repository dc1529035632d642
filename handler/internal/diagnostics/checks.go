package diagnostics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/megdocs/msconnector/handler/internal/config"
	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/msidentity"
	"github.com/megdocs/msconnector/handler/internal/sealing"
	"github.com/megdocs/msconnector/handler/internal/secrets"
	"github.com/megdocs/msconnector/handler/internal/tablestore"
)

// Fixes in the words of the setup guide this connector replaces
// (../shared/reference/megdocs-microsoft-integration-setup-guide.txt,
// "Troubleshooting"), adapted to where this connector keeps each value.
const (
	fixAppNotFound = "Application not found: verify MICROSOFT_CLIENT_ID is correct (the app registration's Application (client) ID), " +
		"check that the app registration is in the correct Azure tenant (MICROSOFT_APP_TENANT_ID is its Directory (tenant) ID), " +
		"and ensure the app registration hasn't been deleted."
	fixWrongSecret = "Invalid client secret: verify the client secret is correct (Key Vault secret microsoft-client-secret; " +
		"MICROSOFT_CLIENT_SECRET without KEY_VAULT_URL): it is the secret's Value, not its Secret ID. " +
		"Ensure no extra spaces or line breaks in the secret value; create a new client secret if needed."
	fixExpiredSecret = "Invalid client secret: the client secret has expired. Create a new client secret in the app registration " +
		"(Certificates & secrets, + New client secret) and store its value as a new version of Key Vault secret microsoft-client-secret " +
		"(MICROSOFT_CLIENT_SECRET without KEY_VAULT_URL); it takes effect without a restart. Rotate secrets before they expire (docs/operations.md)."
	fixFederated = "The managed identity's assertion matches no federated credential of the app registration: in the app registration " +
		"(Certificates & secrets, Federated credentials) the credential must name this app's user-assigned managed identity " +
		"(issuer and subject: the identity's object ID) with audience api://AzureADTokenExchange, and AZURE_CLIENT_ID must be that identity's client ID. " +
		"Redeploy (make deploy) to recreate it."
	fixInsufficient = "Insufficient permissions: verify all permissions of MICROSOFT_SCOPES are added in the Azure Portal (API permissions, Microsoft Graph, Delegated), " +
		"check if admin consent is required and granted, then ask the affected users to disconnect and reconnect Microsoft."
	fixTimer = "The refresh timer has not finished a sweep in the last hour: check that the function app is running and its timer function is enabled " +
		"(REFRESH_SCHEDULE, every 5 minutes by default), and look for refresh_swept and sweep_list_failed in the logs (docs/operations.md)."
)

// AADSTS codes the credential check names.
const (
	aadstsAppNotFound   = 700016
	aadstsWrongSecret   = 7000215
	aadstsSecretExpired = 7000222
)

// aadstsFederated: a client assertion or federated credential that does not
// match (facts/microsoft-identity.md; 700213 is "no matching federated
// identity record").
var aadstsFederated = []int{700024, 700027, 70021, 700213}

func (s *Service) checkConfiguration(context.Context) Check {
	c := Check{Name: CheckConfiguration}
	if len(s.Config.Problems) == 0 {
		c.OK = true
		c.Detail = fmt.Sprintf("every setting present and valid (client auth %s, tenant %s, scopes %s)",
			s.Config.ClientAuth, s.Config.Tenant, strings.Join(s.Config.Scopes, " "))
		return c
	}
	parts := make([]string, 0, len(s.Config.Problems))
	names := make([]string, 0, len(s.Config.Problems))
	for _, p := range s.Config.Problems {
		parts = append(parts, redactURLs(p.String()))
		names = append(names, p.Setting)
	}
	c.Detail = strings.Join(parts, "; ")
	c.Fix = "Set " + strings.Join(names, ", ") + " in the function app's configuration (app settings; docs/deploy.md) and restart the app."
	return c
}

func (s *Service) checkSecret(ctx context.Context, name string, now time.Time) Check {
	c := Check{Name: SecretPrefix + name}
	env := secrets.EnvName(name)
	if s.Secrets == nil {
		c.Detail = "not read: the Key Vault client could not be built from KEY_VAULT_URL (see the start-up log)"
		c.Fix = "Set KEY_VAULT_URL to the vault's URI (https://<vault>.vault.azure.net) and give the app's managed identity the Key Vault Secrets User role on it."
		return c
	}
	sec, err := s.Secrets.Get(ctx, name)
	if err == nil && name == secrets.EncryptionKey {
		// Readable is not enough: the key must decode to 32 bytes.
		_, err = sealing.NewSecretKeyring(s.Secrets).Current(ctx)
	}
	if err != nil {
		var nc *secrets.NotConfiguredError
		if errors.As(err, &nc) {
			c.Detail = "not readable: " + nc.Reason
		} else {
			c.Detail = "not readable (see the log)"
			s.Log.Warn().Str("event", "diagnostics_secret_failed").Str("secret", name).Err(err).Msg("diagnostics could not read a secret")
		}
		if s.SecretsFromEnv {
			c.Fix = "Set the environment variable " + env + " (local development), or set KEY_VAULT_URL and store the secret in Key Vault as " + name + "."
		} else {
			c.Fix = "Store the secret in Key Vault as " + name + " and give the app's managed identity the Key Vault Secrets User role on the vault (docs/operations.md)."
		}
		if name == secrets.EncryptionKey {
			c.Fix += " Its value is base64 of 32 random bytes (openssl rand -base64 32)."
		}
		return c
	}
	if s.SecretsFromEnv {
		c.OK = true
		c.Detail = "read from environment variable " + env + " (KEY_VAULT_URL is not set: local development only); no version or expiry"
		return c
	}
	version := sec.Version
	if len(version) > 8 {
		version = version[:8] + "..."
	}
	if sec.Expires.IsZero() {
		c.OK = true
		c.Detail = "version " + version + ", no expiry set"
		return c
	}
	left := sec.Expires.Sub(now)
	days := int(left.Hours() / 24)
	when := sec.Expires.UTC().Format("2006-01-02")
	switch {
	case left <= 0:
		c.Detail = fmt.Sprintf("version %s, expired %s (%d days ago)", version, when, -days)
	default:
		c.Detail = fmt.Sprintf("version %s, expires %s (%d days)", version, when, days)
	}
	if left > SecretWarning {
		c.OK = true
		return c
	}
	if name == secrets.ClientSecret {
		c.Fix = "Rotate secrets before they expire: create a new client secret in the app registration (Certificates & secrets), store its value as a new version of Key Vault secret " +
			name + ", test that new connections work, and delete the old secret after 24-48 hours (docs/operations.md)."
	} else {
		c.Fix = "Rotate it before it expires: store a new version of Key Vault secret " + name + " with a later expiry (docs/operations.md)."
	}
	return c
}

func (s *Service) checkTables(ctx context.Context) Check {
	c := Check{Name: CheckTableStorage}
	if s.Tables == nil {
		c.Detail = "not checked: Table Storage is not configured (see the configuration check)"
		c.Fix = "Set TABLES_ENDPOINT (with the managed identity) or TABLES_CONNECTION_STRING (development) and restart the app."
		return c
	}
	start := time.Now()
	err := s.Tables.Probe(ctx)
	if err == nil {
		c.OK = true
		c.Detail = fmt.Sprintf("tables connections and connectsessions reachable; probe row written, read and deleted in %d ms", time.Since(start).Milliseconds())
		return c
	}
	s.Log.Warn().Str("event", "diagnostics_tables_failed").Err(err).Msg("diagnostics: Table Storage probe failed")
	step := "probe"
	var pe *tablestore.ProbeError
	if errors.As(err, &pe) {
		step = pe.Step
	}
	var re *azcore.ResponseError
	switch {
	case errors.As(err, &re):
		c.Detail = fmt.Sprintf("%s: HTTP %d %s", step, re.StatusCode, re.ErrorCode)
		if re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusUnauthorized {
			c.Fix = "Give the app's managed identity the Storage Table Data Contributor role on the storage account (TABLES_ENDPOINT), or fix TABLES_CONNECTION_STRING's key."
		} else {
			c.Fix = "Check the storage account named by TABLES_ENDPOINT (or TABLES_CONNECTION_STRING) exists and answers; see the log for the service's message."
		}
	case isNetwork(err):
		c.Detail = step + ": the Table service cannot be reached"
		c.Fix = "Check TABLES_ENDPOINT (or TABLES_CONNECTION_STRING) and the app's outbound network to the storage account."
	default:
		c.Detail = step + ": failed (see the log)"
		c.Fix = "See the connector's log (diagnostics_tables_failed) for the service's message."
	}
	return c
}

func (s *Service) checkCredential(ctx context.Context) Check {
	c := Check{Name: CheckCredential}
	tenant := s.Config.AppTenantID
	switch {
	case tenant == "" || len(s.Config.Missing(config.AreaDiagnostics)) > 0:
		c.Detail = "not configured: MICROSOFT_APP_TENANT_ID (the tenant holding the app registration) is not set or not valid, so the app's credential cannot be checked"
		c.Fix = "Set MICROSOFT_APP_TENANT_ID to the Directory (tenant) ID shown on the app registration's Overview page."
		return c
	case s.Credential == nil:
		c.Detail = "not checked: the Microsoft settings are incomplete (see the configuration check)"
		c.Fix = "Fix the settings the configuration check names and restart the app."
		return c
	}
	scope := s.Config.GraphURL + "/.default"
	err := s.Credential.CheckCredential(ctx, tenant)
	if err == nil {
		c.OK = true
		c.Detail = fmt.Sprintf("client-credentials token for %s issued by tenant %s (client auth %s)", scope, tenant, s.Config.ClientAuth)
		return c
	}
	s.Log.Warn().Str("event", "diagnostics_credential_failed").Err(err).Msg("diagnostics: the app's credential was refused")
	var me *msidentity.Error
	if !errors.As(err, &me) {
		// The credential could not even be applied: the client secret or
		// the managed identity's token is unavailable.
		var nc *secrets.NotConfiguredError
		switch {
		case errors.As(err, &nc):
			c.Detail = "not sent: the client secret cannot be read: " + nc.Reason
			c.Fix = "Fix the secret:" + secrets.ClientSecret + " check first."
		case s.Config.ClientAuth == config.ClientAuthManagedIdentity:
			c.Detail = "not sent: the managed identity gave no token for the client assertion (see the log)"
			c.Fix = "Check that AZURE_CLIENT_ID is the client ID of the user-assigned managed identity assigned to this function app."
		default:
			c.Detail = "not sent (see the log)"
			c.Fix = "See the connector's log (diagnostics_credential_failed)."
		}
		return c
	}
	switch {
	case me.HasErrorCode(aadstsAppNotFound):
		c.Detail = fmt.Sprintf("AADSTS700016: application %s was not found in tenant %s", s.Config.ClientID, tenant)
		c.Fix = fixAppNotFound
	case me.HasErrorCode(aadstsSecretExpired):
		c.Detail = "AADSTS7000222: the client secret has expired"
		c.Fix = fixExpiredSecret
	case me.HasErrorCode(aadstsWrongSecret):
		c.Detail = "AADSTS7000215: the client secret is not one of the app registration's secrets"
		c.Fix = fixWrongSecret
	case hasAny(me, aadstsFederated):
		c.Detail = fmt.Sprintf("%s: the client assertion matches no federated credential of the app registration", aadstsList(me))
		c.Fix = fixFederated
	case me.Code == msidentity.CodeThrottled:
		c.Detail = fmt.Sprintf("not checked: Microsoft is throttling this instance's token requests (retry after %s)", me.Delay.Round(time.Second))
		c.Fix = "Wait for the pause to end and check again (docs/operations.md, throttling)."
	case me.Code == msidentity.CodeNetworkError:
		c.Detail = "no answer from " + s.Config.AuthorityHost
		c.Fix = "Check MICROSOFT_AUTHORITY_HOST and the app's outbound network."
	default:
		c.Detail = fmt.Sprintf("Microsoft refused the request: %s %s (HTTP %d)", me.ErrorCode(), aadstsList(me), me.HTTPStatus)
		c.Fix = "Look the AADSTS code up in Microsoft's error reference (https://login.microsoftonline.com/error?code=<number>) and fix the app registration; " + fixAppNotFound
	}
	return c
}

// checkSweep reads the last sweep's record once for the timer and the
// connections checks.
func (s *Service) checkSweep(ctx context.Context, now time.Time) (timer, conns Check) {
	timer, conns = Check{Name: CheckTimer}, Check{Name: CheckConnections}
	if s.Tables == nil {
		timer.Detail = "not checked: Table Storage is not configured"
		timer.Fix = "Fix the table_storage check first."
		conns.Detail, conns.Fix = timer.Detail, timer.Fix
		return timer, conns
	}
	r, err := s.Tables.LastSweep(ctx)
	switch {
	case errNotFound(err):
		timer.Detail = "no sweep has finished yet"
		timer.Fix = fixTimer
		conns.Detail = "not counted yet: the counts come from the last sweep, and none has finished"
		conns.Fix = fixTimer
		return timer, conns
	case err != nil:
		s.Log.Warn().Str("event", "diagnostics_sweep_read_failed").Err(err).Msg("diagnostics: could not read the last sweep's record")
		timer.Detail = "the last sweep's record cannot be read (see the log)"
		timer.Fix = "Fix the table_storage check first."
		conns.Detail, conns.Fix = timer.Detail, timer.Fix
		return timer, conns
	}
	ago := now.Sub(r.FinishedAt)
	when := describeAgo(ago)
	timer.Detail = fmt.Sprintf("last sweep %s (%s): %d due, %d refreshed, %d reconnect_required, %d transient failures, %d skipped, %d ms",
		when, r.FinishedAt.UTC().Format(time.RFC3339), r.Due, r.Refreshed, r.ReconnectRequired, r.TransientFailures, r.Skipped, r.DurationMS)
	if r.StoppedBy != "" {
		timer.Detail += "; stopped early (" + r.StoppedBy + ")"
	}
	timer.OK = ago <= SweepMaxAge
	if !timer.OK {
		timer.Fix = fixTimer
	}

	conns.Detail = fmt.Sprintf("%d connected, %d reconnect_required, %d missing a required scope (as the last sweep counted them, %s)",
		r.Connections[connection.StatusConnected], r.Connections[connection.StatusReconnectRequired], r.MissingScope, when)
	if r.StoppedBy != "" {
		conns.Detail += "; partial: that sweep stopped early (" + r.StoppedBy + ")"
	}
	conns.OK = r.MissingScope == 0
	if !conns.OK {
		conns.Fix = fixInsufficient + " GET /api/connections lists the connections; their scopes show which permission is missing."
	}
	return timer, conns
}

// A problem may quote the setting's value; a URL's query or user info can
// carry a credential (a webhook URL with ?code=..., user:password@), so
// they never reach the report.
var (
	urlQuery    = regexp.MustCompile(`\?[^"\s]*`)
	urlUserInfo = regexp.MustCompile(`//[^/"\s@]*@`)
)

func redactURLs(s string) string {
	s = urlQuery.ReplaceAllString(s, "?[redacted]")
	return urlUserInfo.ReplaceAllString(s, "//[redacted]@")
}

func describeAgo(d time.Duration) string {
	switch {
	case d < time.Minute:
		return "less than a minute ago"
	case d < 2*time.Minute:
		return "1 minute ago"
	case d < 2*time.Hour:
		return fmt.Sprintf("%d minutes ago", int(d.Minutes()))
	default:
		return fmt.Sprintf("%d hours ago", int(d.Hours()))
	}
}

func hasAny(e *msidentity.Error, codes []int) bool {
	for _, c := range codes {
		if e.HasErrorCode(c) {
			return true
		}
	}
	return false
}

func aadstsList(e *msidentity.Error) string {
	parts := make([]string, 0, len(e.ErrorCodes))
	for _, c := range e.ErrorCodes {
		parts = append(parts, fmt.Sprintf("AADSTS%d", c))
	}
	return strings.Join(parts, ", ")
}

func isNetwork(err error) bool {
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded)
}
