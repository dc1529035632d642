package msidentity

import (
	"fmt"
	"strings"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// account checks the id_token against issuer (the discovery document's
// template) and returns the account it names.
func (c *Client) account(raw, issuer string) (connection.Account, error) {
	claims, err := parseIDToken(raw)
	if err != nil {
		return connection.Account{}, &IDTokenError{Reason: err.Error()}
	}
	if !claims.Aud.contains(c.clientID) {
		return connection.Account{}, &IDTokenError{Reason: fmt.Sprintf("aud %q is not the client id", []string(claims.Aud))}
	}
	if claims.Tid == "" || claims.Oid == "" {
		return connection.Account{}, &IDTokenError{Reason: "tid or oid is missing"}
	}
	if !connection.IsGUID(claims.Tid) {
		// Microsoft's tid is a GUID; anything else would also be pasted
		// into the issuer template below.
		return connection.Account{}, &IDTokenError{Reason: "tid is not a tenant ID"}
	}
	// The issuer's host is not always the authority's (Azure China's
	// login.chinacloudapi.cn issues as login.partner.microsoftonline.cn,
	// login.windows.net as login.microsoftonline.com), so only the
	// authority's own document says what it is. OpenID Connect Core
	// 3.1.3.7 point 2: exact match.
	if want := expectedIssuer(issuer, claims.Tid); claims.Iss != want {
		return connection.Account{}, &IDTokenError{Reason: fmt.Sprintf("iss %q is not %q", claims.Iss, want)}
	}
	if t := issuerTenant(issuer); t != tenantPlaceholder && !strings.EqualFold(t, claims.Tid) {
		// A fixed issuer (consumers, a tenant) names one tenant: a token
		// of another tenant cannot have come from it.
		return connection.Account{}, &IDTokenError{Reason: fmt.Sprintf("tid %q is not the issuer's tenant", claims.Tid)}
	}
	if connection.IsGUID(c.tenant) && !strings.EqualFold(c.tenant, claims.Tid) {
		// A single-tenant configuration must not accept another tenant's
		// account, whatever the endpoint says.
		return connection.Account{}, &IDTokenError{Reason: fmt.Sprintf("tid %q is not the configured tenant", claims.Tid)}
	}
	return connection.Account{ID: claims.Oid, TenantID: claims.Tid}, nil
}
