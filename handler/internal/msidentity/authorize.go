package msidentity

import "golang.org/x/oauth2"

// AuthCodeURL is where to send the browser: the authorize endpoint with
// client_id, response_type=code, redirect_uri, response_mode=query, scope
// (the configured scopes plus openid profile), state, the S256 code
// challenge of verifier, and login_hint when given, else
// prompt=select_account so the user picks the account deliberately.
func (c *Client) AuthCodeURL(state, verifier, loginHint string) string {
	opts := []oauth2.AuthCodeOption{
		oauth2.S256ChallengeOption(verifier),
		oauth2.SetAuthURLParam("response_mode", "query"),
	}
	if loginHint != "" {
		opts = append(opts, oauth2.SetAuthURLParam("login_hint", loginHint))
	} else {
		opts = append(opts, oauth2.SetAuthURLParam("prompt", "select_account"))
	}
	return c.oauth.AuthCodeURL(state, opts...)
}
