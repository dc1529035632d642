package msidentity

import (
	"context"
	"fmt"
	"net/url"
	"strings"
)

// opCredential names the diagnostics' client-credentials request in errors.
const opCredential = "client_credentials"

// CheckCredential proves the app registration and its client credential
// without a user: a client-credentials request for {GraphURL}/.default to
// homeTenant's token endpoint (the tenant holding the app registration;
// never common), authenticated exactly as every other token request
// (the same ClientCredential, renewed once on invalid_client, and the same
// throttling pause). It succeeds even when the app has only delegated
// permissions. The token is discarded. A refusal is an *Error carrying
// Microsoft's codes: AADSTS700016 (no such application in that tenant),
// 7000215 (wrong secret), 7000222 (expired secret), 700024/700027/70021
// (a client assertion or federated credential that does not match).
func (c *Client) CheckCredential(ctx context.Context, homeTenant string) error {
	if homeTenant == "" || strings.ContainsAny(homeTenant, "/?#") || strings.TrimSpace(homeTenant) != homeTenant {
		return fmt.Errorf("msidentity: %s: tenant %q is not a path segment", opCredential, homeTenant)
	}
	tokenURL := c.authority + "/" + url.PathEscape(homeTenant) + "/oauth2/v2.0/token"
	// The token itself is never kept.
	_, err := c.tokenRequest(ctx, opCredential, tokenURL, url.Values{
		"grant_type": {"client_credentials"},
		"scope":      {c.graphURL + "/.default"},
	})
	return err
}
