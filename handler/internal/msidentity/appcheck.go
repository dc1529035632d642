package msidentity

import (
	"context"
	"errors"
	"fmt"
	"net/http"
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
	_, err := c.tokenRequest(ctx, opCredential, func(ctx context.Context, cred url.Values) (Tokens, error) {
		form := url.Values{
			"grant_type": {"client_credentials"},
			"client_id":  {c.clientID},
			"scope":      {c.graphURL + "/.default"},
		}
		for k, vs := range cred {
			form[k] = vs
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
		if err != nil {
			return Tokens{}, fmt.Errorf("msidentity: %s: %w", opCredential, err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Accept", "application/json")
		status, h, body, err := c.do(req)
		if err != nil {
			return Tokens{}, &Error{Op: opCredential, HTTPStatus: status, Code: CodeNetworkError, Err: err}
		}
		if status < 200 || status > 299 {
			return Tokens{}, responseError(opCredential, status, h, body, c.now())
		}
		if len(body) > maxBody {
			return Tokens{}, &Error{Op: opCredential, HTTPStatus: status, Code: CodeInvalidResponse, Err: errors.New("response larger than 1 MiB")}
		}
		tr, err := parseTokenResponse(body)
		if err != nil {
			return Tokens{}, &Error{Op: opCredential, HTTPStatus: status, Code: CodeInvalidResponse, Err: err}
		}
		if tr.Error != "" {
			return Tokens{}, responseError(opCredential, status, h, body, c.now())
		}
		return Tokens{}, nil // the token itself is never kept
	})
	return err
}
