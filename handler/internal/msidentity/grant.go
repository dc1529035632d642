package msidentity

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// tokenRequest is the one path of every grant (authorization_code,
// refresh_token, client_credentials) to a token endpoint, under the rules
// every such call shares: a refresh fails fast while the instance is paused
// (a code exchange never does: a person is waiting for it), client_id and
// the credential go in the form body (OAuth 2.0's client_secret_post, never
// an Authorization header), the same size limit, error classes and
// throttling apply to every answer, and on invalid_client the credential is
// renewed and the request sent once more.
func (c *Client) tokenRequest(ctx context.Context, op, tokenURL string, grant url.Values) (tokenResponse, error) {
	for attempt := 0; ; attempt++ {
		if wait := c.paused(); wait > 0 && op == opRefresh {
			return tokenResponse{}, &Error{Op: op, Code: CodeThrottled, Delay: wait, Err: connection.ErrPaused}
		}
		gen := c.credGen.Load()
		form := url.Values{"client_id": {c.clientID}}
		for k, vs := range grant {
			form[k] = vs
		}
		if err := c.cred.Apply(ctx, form); err != nil {
			return tokenResponse{}, fmt.Errorf("msidentity: %s: %w", op, err)
		}
		tr, err := c.post(ctx, op, tokenURL, form)
		var e *Error
		if !errors.As(err, &e) {
			return tr, err
		}
		c.observe(e)
		if e.Code != "invalid_client" || attempt > 0 {
			return tr, err
		}
		if rerr := c.renew(ctx, gen); rerr != nil {
			c.log.Error().Str("event", "client_credential_renew_failed").EmbedObject(e).AnErr("renew_error", rerr).
				Msg("Microsoft rejected the client credential and it could not be renewed")
			return tr, err
		}
		c.log.Warn().Str("event", "client_credential_renewed").EmbedObject(e).
			Msg("Microsoft rejected the client credential; renewed it and retrying once")
	}
}

// post sends one token request and reads its answer: a checked
// tokenResponse, or an *Error whatever went wrong (the network, a status,
// Microsoft's error JSON even under a 2xx, an oversized or unusable body).
func (c *Client) post(ctx context.Context, op, tokenURL string, form url.Values) (tokenResponse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return tokenResponse{}, fmt.Errorf("msidentity: %s: %w", op, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	status, h, body, err := c.send(op, req)
	if err != nil {
		return tokenResponse{}, err
	}
	tr, err := parseTokenResponse(body)
	if err != nil {
		return tokenResponse{}, &Error{Op: op, HTTPStatus: status, Code: CodeInvalidResponse, Err: err}
	}
	if tr.Error != "" {
		return tokenResponse{}, responseError(op, status, h, body, c.now())
	}
	return tr, nil
}

// send sends req (the token endpoint's or Graph's) and returns a 2xx
// answer's status, headers and body, or an *Error for op: the network, a
// non-2xx status (Microsoft's error JSON parsed), a body over maxBody. It
// reads at most maxBody+1 bytes, so an oversized body is detected without
// being buffered.
func (c *Client) send(op string, req *http.Request) (int, http.Header, []byte, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, nil, &Error{Op: op, Code: CodeNetworkError, Err: err}
	}
	defer resp.Body.Close()
	status, h := resp.StatusCode, resp.Header
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	switch {
	case err != nil:
		// The connection broke mid-answer: no usable response.
		return 0, nil, nil, &Error{Op: op, HTTPStatus: status, Code: CodeNetworkError, Err: err}
	case status < 200 || status > 299:
		return 0, nil, nil, responseError(op, status, h, body, c.now())
	case len(body) > maxBody:
		return 0, nil, nil, &Error{Op: op, HTTPStatus: status, Code: CodeInvalidResponse, Err: errors.New("response larger than 1 MiB")}
	}
	return status, h, body, nil
}

// renew renews the credential unless another request already did since
// gen was read (then the retry uses that renewal).
func (c *Client) renew(ctx context.Context, gen uint64) error {
	select {
	case c.renewLock <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.renewLock }()
	if c.credGen.Load() != gen {
		return nil
	}
	if err := c.cred.Renew(ctx); err != nil {
		return err
	}
	c.credGen.Add(1)
	return nil
}
