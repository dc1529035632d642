package msidentity

import (
	"context"
	"net/url"
)

// Exchange redeems an authorization code with its PKCE verifier and
// identifies the account from the id_token (aud must be the client ID, iss
// the issuer the authority's discovery document announces for the token's
// tenant). The document is read first (cached for an hour): when it cannot
// be, the code is not sent and the error is a *DiscoveryError. On
// invalid_client the credential is renewed and the request sent once more.
func (c *Client) Exchange(ctx context.Context, code, verifier string) (Tokens, error) {
	// Before the code is spent: an exchange whose id_token cannot be
	// checked is worthless, and the unspent code could still be redeemed.
	issuer, err := c.disc.issuerTemplate(ctx)
	if err != nil {
		return Tokens{}, err
	}
	tr, err := c.tokenRequest(ctx, opExchange, c.tokenURL, url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {code},
		"redirect_uri":  {c.redirectURL},
		"code_verifier": {verifier},
	})
	if err != nil {
		return Tokens{}, err
	}
	acct, err := c.account(string(tr.IDToken), issuer)
	if err != nil {
		return Tokens{}, err
	}
	t := c.grant(tr)
	t.Account = acct
	return t, nil
}
