package connectflow

import (
	"errors"
	"net/url"
	"strings"
)

// Allowlist decides which return URLs the CMS may send the browser back to.
// It is the only thing standing between the callback and an open redirect,
// so it compares parsed, normalised components, never raw string prefixes.
type Allowlist struct {
	prefixes []*url.URL
}

// NewAllowlist parses the configured prefixes (ALLOWED_RETURN_URLS).
func NewAllowlist(prefixes []string) (*Allowlist, error) {
	a := &Allowlist{}
	for _, p := range prefixes {
		u, err := parseAbsolute(p)
		if err != nil {
			return nil, errors.New("connectflow: allowed return url " + p + ": " + err.Error())
		}
		a.prefixes = append(a.prefixes, u)
	}
	return a, nil
}

// Allowed reports whether raw may be used as a return URL.
func (a *Allowlist) Allowed(raw string) bool {
	u, err := parseAbsolute(raw)
	if err != nil {
		return false
	}
	for _, p := range a.prefixes {
		if matches(p, u) {
			return true
		}
	}
	return false
}

// parseAbsolute accepts only absolute http(s) URLs without user info,
// backslashes, control characters or dot segments: the shapes browsers and
// servers disagree about.
func parseAbsolute(raw string) (*url.URL, error) {
	if raw == "" || len(raw) > 2048 {
		return nil, errors.New("empty or too long")
	}
	for _, r := range raw {
		if r < 0x20 || r == 0x7f || r == '\\' || r == ' ' {
			return nil, errors.New("contains a control character, space or backslash")
		}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("not a URL")
	}
	u.Scheme = strings.ToLower(u.Scheme)
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, errors.New("scheme must be http or https")
	}
	if u.Opaque != "" || u.Host == "" || u.User != nil || strings.Contains(u.Host, "@") {
		return nil, errors.New("must be absolute with a host and no user info")
	}
	u.Host = strings.ToLower(u.Host)
	if strings.HasSuffix(u.Host, ".") {
		return nil, errors.New("host must not end with a dot")
	}
	// Drop the scheme's default port so https://h:443/ equals https://h/.
	if (u.Scheme == "https" && u.Port() == "443") || (u.Scheme == "http" && u.Port() == "80") {
		u.Host = u.Hostname()
		if strings.Contains(u.Host, ":") {
			u.Host = "[" + u.Host + "]"
		}
	}
	for _, seg := range strings.Split(u.Path, "/") {
		if seg == "." || seg == ".." {
			return nil, errors.New("dot segments are not allowed")
		}
	}
	lower := strings.ToLower(u.EscapedPath())
	if strings.Contains(lower, "%2e") || strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") {
		return nil, errors.New("encoded dots or slashes are not allowed in the path")
	}
	return u, nil
}

// matches: same scheme and host (port included), and the candidate's path is
// the prefix's path or continues it at a segment boundary, so
// https://a.example.com/app does not allow https://a.example.com/application.
func matches(prefix, u *url.URL) bool {
	if prefix.Scheme != u.Scheme || prefix.Host != u.Host {
		return false
	}
	pp, up := prefix.Path, u.Path
	if pp == "" {
		pp = "/"
	}
	if up == "" {
		up = "/"
	}
	if !strings.HasPrefix(up, pp) {
		return false
	}
	if len(up) == len(pp) || strings.HasSuffix(pp, "/") || up[len(pp)] == '/' {
		// A prefix with a query limits the query too.
		return prefix.RawQuery == "" || strings.HasPrefix(u.RawQuery, prefix.RawQuery)
	}
	return false
}

// withResult appends the callback's result to the return URL's query,
// keeping what the CMS put there byte for byte. "microsoft" comes first,
// as the contract writes it (microsoft=signed_in&connect_code=...,
// microsoft=error&reason=...), the rest in key order.
func withResult(returnURL string, params url.Values) string {
	u, err := url.Parse(returnURL)
	if err != nil {
		return returnURL
	}
	rest := url.Values{}
	for k, v := range params {
		if k != "microsoft" {
			rest[k] = v
		}
	}
	extra := url.Values{"microsoft": params["microsoft"]}.Encode()
	if r := rest.Encode(); r != "" {
		extra += "&" + r
	}
	if u.RawQuery == "" {
		u.RawQuery = extra
	} else {
		u.RawQuery += "&" + extra
	}
	return u.String()
}
