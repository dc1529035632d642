package msidentity

import (
	"context"
	"fmt"
	"net/http"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// Profile is the signed-in user's Graph /me.
type Profile struct {
	// ID is Graph's user id: the oid for work and school accounts, a
	// 16-hex-digit CID for personal accounts. Identify accounts by the
	// id_token's oid and tid instead.
	ID                string `json:"id"`
	DisplayName       string `json:"displayName"`
	Mail              string `json:"mail"`
	UserPrincipalName string `json:"userPrincipalName"`
}

// Email is mail, or userPrincipalName when the account has no mailbox
// address (personal accounts often have none).
func (p Profile) Email() string {
	if p.Mail != "" {
		return p.Mail
	}
	return p.UserPrincipalName
}

// Me reads the signed-in user's Graph profile (GET {GraphURL}/v1.0/me).
// Graph's throttling is separate from the token endpoint's: a 429 here
// returns its Retry-After but pauses nothing else.
func (c *Client) Me(ctx context.Context, accessToken string) (Profile, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.graphURL+"/v1.0/me?$select=id,displayName,mail,userPrincipalName", nil)
	if err != nil {
		return Profile{}, fmt.Errorf("msidentity: me: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Accept", "application/json")
	status, _, body, err := c.send(opMe, req)
	if err != nil {
		return Profile{}, err
	}
	p, err := parseProfile(body)
	if err != nil {
		return Profile{}, &Error{Op: opMe, HTTPStatus: status, Code: CodeInvalidResponse, Err: err}
	}
	return p, nil
}

// Profile is Me as the connect flow wants it: an Account with Email and
// DisplayName. ID and TenantID stay empty: they come from the id_token
// (Graph's id is not the oid for personal accounts).
func (c *Client) Profile(ctx context.Context, accessToken string) (connection.Account, error) {
	p, err := c.Me(ctx, accessToken)
	if err != nil {
		return connection.Account{}, err
	}
	return connection.Account{Email: p.Email(), DisplayName: p.DisplayName}, nil
}
