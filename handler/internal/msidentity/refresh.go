package msidentity

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"time"
)

// Refresh redeems a refresh token for new tokens. It sends grant_type,
// refresh_token, client_id, scope (the configured scopes: omitting scope has
// produced AADSTS90009) and the client credential in the form body, with no
// Authorization header. Microsoft rotates refresh tokens: store the returned
// one. When the answer has none, Tokens.RefreshToken is empty and the caller
// keeps the one it has (Microsoft does not revoke it on use). On
// invalid_client the credential is renewed and the request sent once more.
func (c *Client) Refresh(ctx context.Context, refreshToken string) (Tokens, error) {
	if refreshToken == "" {
		return Tokens{}, errors.New("msidentity: refresh: no refresh token")
	}
	tr, err := c.tokenRequest(ctx, opRefresh, c.tokenURL, url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {refreshToken},
		"scope":         {c.refreshScope},
	})
	if err != nil {
		return Tokens{}, err
	}
	return c.grant(tr), nil
}

// grant converts a checked token response.
func (c *Client) grant(tr tokenResponse) Tokens {
	return Tokens{
		AccessToken:  tr.AccessToken,
		RefreshToken: tr.RefreshToken,
		ExpiresAt:    c.now().Add(time.Duration(tr.ExpiresIn) * time.Second),
		Scopes:       strings.Fields(tr.Scope),
	}
}
