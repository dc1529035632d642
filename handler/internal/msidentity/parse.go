package msidentity

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
)

// maxBody bounds every answer this package reads (every grant's, Graph's,
// the discovery document): a token response is a few KiB, and a broken or
// hostile endpoint must not make us buffer megabytes.
const maxBody = 1 << 20

// tokenResponse is the token endpoint's success JSON.
type tokenResponse struct {
	AccessToken  string  `json:"access_token"`
	TokenType    string  `json:"token_type"`
	ExpiresIn    seconds `json:"expires_in"`
	Scope        string  `json:"scope"`
	RefreshToken string  `json:"refresh_token"`
	// IDToken is anything but a string read as none: the exchange then
	// fails on a missing id_token, an *IDTokenError, as for an absent one.
	IDToken optString `json:"id_token"`
	// Error is set when an endpoint answers 2xx with an OAuth error
	// (RFC 6749 says 400, some proxies say 200).
	Error string `json:"error"`
}

// optString is a JSON string, or "" for any other JSON value.
type optString string

// UnmarshalJSON keeps a string and reads any other value as "".
func (s *optString) UnmarshalJSON(b []byte) error {
	var str string
	if json.Unmarshal(b, &str) == nil {
		*s = optString(str)
	}
	return nil
}

// seconds accepts expires_in as a JSON number or a numeric string: the v2
// endpoint sends a number, the v1 endpoint and some proxies a string.
type seconds int64

// UnmarshalJSON accepts a number or a numeric string.
func (s *seconds) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return err
		}
		b = []byte(str)
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("expires_in: %w", err)
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || f < 0 || f > math.MaxInt32 {
		return errors.New("expires_in out of range")
	}
	*s = seconds(f)
	return nil
}

// errNoAccessToken etc. describe unusable success answers. They never
// contain the body (which holds tokens).
var (
	errNoAccessToken = errors.New("response has no access_token")
	errNoExpiry      = errors.New("response has no positive expires_in")
	errTokenType     = errors.New("response token_type is not Bearer")
)

// parseTokenResponse decodes and checks a 2xx token endpoint body. A body
// with `error` is returned as is (tr.Error set, nil error) so the caller
// treats it as Microsoft's error.
func parseTokenResponse(body []byte) (tokenResponse, error) {
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil {
		// json's messages quote at most a character of the input, never a
		// token, so they are safe to wrap.
		return tokenResponse{}, fmt.Errorf("malformed token response: %w", err)
	}
	if tr.Error != "" {
		return tr, nil
	}
	return tr, checkTokenResponse(tr)
}

func checkTokenResponse(tr tokenResponse) error {
	switch {
	case tr.AccessToken == "":
		return errNoAccessToken
	case tr.ExpiresIn <= 0:
		return errNoExpiry
	case tr.TokenType != "" && !strings.EqualFold(tr.TokenType, "Bearer"):
		return errTokenType
	}
	return nil
}

// idClaims are the id_token claims the connector uses.
type idClaims struct {
	Aud               audience `json:"aud"`
	Iss               string   `json:"iss"`
	Oid               string   `json:"oid"`
	Tid               string   `json:"tid"`
	Name              string   `json:"name"`
	PreferredUsername string   `json:"preferred_username"`
}

// audience is JWT's aud: a string or an array of strings (RFC 7519 4.1.3).
type audience []string

// UnmarshalJSON accepts a string or an array of strings.
func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("aud is neither a string nor an array of strings")
	}
	*a = many
	return nil
}

func (a audience) contains(s string) bool {
	for _, x := range a {
		if x == s {
			return true
		}
	}
	return false
}

// parseIDToken decodes a JWT's payload without checking its signature. That
// is safe only for an id_token received directly from the token endpoint
// over TLS (OpenID Connect Core 3.1.3.7, point 6): the connector never
// accepts an id_token from the browser.
func parseIDToken(raw string) (idClaims, error) {
	if raw == "" {
		return idClaims{}, errors.New("missing (is openid among the requested scopes?)")
	}
	if len(raw) > maxBody {
		return idClaims{}, errors.New("too large")
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return idClaims{}, fmt.Errorf("not a JWS compact serialization (%d parts)", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return idClaims{}, errors.New("payload is not base64url")
	}
	var c idClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return idClaims{}, errors.New("payload is not a JSON object of claims")
	}
	return c, nil
}

// parseProfile decodes Graph's user JSON; mail may be null.
func parseProfile(body []byte) (Profile, error) {
	var p Profile
	if err := json.Unmarshal(body, &p); err != nil {
		return Profile{}, fmt.Errorf("malformed profile: %w", err)
	}
	if p.ID == "" {
		return Profile{}, errors.New("profile has no id")
	}
	return p, nil
}
