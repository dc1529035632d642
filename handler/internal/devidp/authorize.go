package devidp

import (
	"context"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// authRequest is a checked authorize request.
type authRequest struct {
	tenant, redirectURI, state, challenge, loginHint, nonce string
	scopes                                                  grantScopes
}

// authProblem is why an authorize request cannot go on: either an error
// page (client or redirect URI unknown: Microsoft never redirects then) or a
// redirect back to the client with error and error_description.
type authProblem struct {
	page     bool
	status   int
	code     string
	aadsts   int
	message  string
	redirect string
	state    string
}

// parseAuthorize checks the authorize parameters as Microsoft does, in
// Microsoft's order: the client and redirect URI first (an error page),
// then the rest (errors sent back to the redirect URI).
func (s *Server) parseAuthorize(r *http.Request) (authRequest, *authProblem) {
	q := r.URL.Query()
	ar := authRequest{
		tenant:      r.PathValue("tenant"),
		redirectURI: q.Get("redirect_uri"),
		state:       q.Get("state"),
		challenge:   q.Get("code_challenge"),
		loginHint:   q.Get("login_hint"),
		nonce:       q.Get("nonce"),
	}
	if id := q.Get("client_id"); id != s.cfg.ClientID {
		return ar, &authProblem{page: true, status: http.StatusBadRequest, code: "unauthorized_client", aadsts: 700016,
			message: fmt.Sprintf("Application with identifier '%s' was not found in the directory 'devidp'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.", id)}
	}
	if ar.redirectURI != s.cfg.RedirectURL {
		return ar, &authProblem{page: true, status: http.StatusBadRequest, code: "invalid_request", aadsts: 50011,
			message: fmt.Sprintf("The redirect URI '%s' specified in the request does not match the redirect URIs configured for the application '%s'. Make sure the redirect URI sent in the request matches one added to your application in the Azure portal.", ar.redirectURI, s.cfg.ClientID)}
	}
	back := func(code string, aadsts int, msg string) *authProblem {
		return &authProblem{code: code, aadsts: aadsts, message: msg, redirect: ar.redirectURI, state: ar.state}
	}
	switch {
	case q.Get("response_type") != "code":
		return ar, back("unsupported_response_type", 700054, fmt.Sprintf("response_type '%s' is not enabled for the application.", q.Get("response_type")))
	case q.Get("response_mode") != "" && q.Get("response_mode") != "query":
		return ar, back("invalid_request", 900144, "This stand-in only supports response_mode=query.")
	case ar.challenge == "":
		return ar, back("invalid_request", 900144, "The request body must contain the following parameter: 'code_challenge'.")
	case q.Get("code_challenge_method") != "S256":
		return ar, back("invalid_request", 501491, "Invalid code_challenge_method: only S256 is accepted.")
	case strings.TrimSpace(q.Get("scope")) == "":
		return ar, back("invalid_request", 900144, "The request body must contain the following parameter: 'scope'.")
	}
	ar.scopes = parseScopes(q.Get("scope"))
	return ar, nil
}

// parseScopes splits a scope parameter into Graph scopes (short form) and
// the OpenID Connect ones.
func parseScopes(scope string) grantScopes {
	var g grantScopes
	seen := map[string]bool{}
	for _, sc := range strings.Fields(scope) {
		switch strings.ToLower(sc) {
		case "openid":
			g.openid = true
		case "profile":
			g.profile = true
		case "offline_access":
			g.offline = true
		case "email":
		default:
			short := sc
			if i := strings.Index(strings.ToLower(sc), "https://graph.microsoft.com/"); i == 0 {
				short = sc[len("https://graph.microsoft.com/"):]
			}
			if k := strings.ToLower(short); !seen[k] {
				seen[k] = true
				g.resource = append(g.resource, short)
			}
		}
	}
	return g
}

// echo is the token response's scope as Microsoft writes it: the resource
// scopes, then openid profile email when the grant has openid; never
// offline_access (it is not part of an access token).
func (g grantScopes) echo(resource []string) string {
	out := append([]string(nil), resource...)
	if g.openid {
		out = append(out, "openid", "profile", "email")
	}
	return strings.Join(out, " ")
}

func (p *authProblem) location() string {
	return withQuery(p.redirect, url.Values{
		"error":             {p.code},
		"error_description": {fmt.Sprintf("AADSTS%d: %s", p.aadsts, p.message)},
		"state":             {p.state},
	})
}

// withQuery adds v to u's query.
func withQuery(u string, v url.Values) string {
	parsed, err := url.Parse(u)
	if err != nil {
		return u
	}
	q := parsed.Query()
	for k, vs := range v {
		if len(vs) == 1 && vs[0] == "" && k == "state" {
			continue // Microsoft omits an absent state
		}
		q[k] = vs
	}
	parsed.RawQuery = q.Encode()
	return parsed.String()
}

// signInView is the sign-in page's data.
type signInView struct {
	Action   string
	Accounts []signInAccount
	Tenant   string
}

type signInAccount struct {
	Account
	Hinted bool
}

// authorizePage shows the sign-in page: one button per eligible account,
// the login_hint's account first and highlighted, and Cancel.
func (s *Server) authorizePage(w http.ResponseWriter, r *http.Request) {
	ar, prob := s.parseAuthorize(r)
	if prob != nil {
		prob.serveTo(w, r)
		return
	}
	view := signInView{Action: r.URL.RequestURI(), Tenant: ar.tenant}
	var rest []signInAccount
	for _, a := range s.eligible(ar.tenant) {
		hinted := ar.loginHint != "" && (strings.EqualFold(ar.loginHint, a.UserPrincipalName) || strings.EqualFold(ar.loginHint, a.Mail))
		if hinted {
			view.Accounts = append(view.Accounts, signInAccount{a, true})
		} else {
			rest = append(rest, signInAccount{a, false})
		}
	}
	view.Accounts = append(view.Accounts, rest...)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("X-Frame-Options", "DENY")
	if err := pages.ExecuteTemplate(w, "signin", view); err != nil {
		s.log.Error().Err(err).Msg("devidp: render sign-in page")
	}
}

// authorizeChoice handles the sign-in page's buttons: account=<oid> signs
// that account in and redirects with a code; cancel returns access_denied.
func (s *Server) authorizeChoice(w http.ResponseWriter, r *http.Request) {
	ar, prob := s.parseAuthorize(r)
	if prob != nil {
		prob.serveTo(w, r)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "devidp: bad form", http.StatusBadRequest)
		return
	}
	if r.PostForm.Get("cancel") != "" {
		p := &authProblem{code: "access_denied", aadsts: 65004, message: "User declined to consent to access the app.", redirect: ar.redirectURI, state: ar.state}
		http.Redirect(w, r, p.location(), http.StatusFound)
		return
	}
	oid := r.PostForm.Get("account")
	var acct *Account
	for _, a := range s.eligible(ar.tenant) {
		if a.OID == oid {
			acct = &a
			break
		}
	}
	if acct == nil {
		(&authProblem{page: true, status: http.StatusBadRequest, code: "invalid_request", aadsts: 50020,
			message: "The account picked is not known or cannot sign in to this tenant."}).serveTo(w, r)
		return
	}
	code := randomToken(48)
	s.mu.Lock()
	s.codes[code] = &authCode{
		clientID: s.cfg.ClientID, redirectURI: ar.redirectURI, challenge: ar.challenge, nonce: ar.nonce,
		oid: acct.OID, scopes: ar.scopes, expires: s.now().Add(codeLifetime),
	}
	s.mu.Unlock()
	s.log.Info().Str("event", "devidp_signed_in").Str("oid", acct.OID).Msg("test account signed in")
	http.Redirect(w, r, withQuery(ar.redirectURI, url.Values{
		"code": {code}, "state": {ar.state}, "session_state": {newGUID()},
	}), http.StatusFound)
}

// serveTo shows the error page, or sends the browser back to the client
// with the error.
func (p *authProblem) serveTo(w http.ResponseWriter, r *http.Request) {
	if !p.page {
		http.Redirect(w, r, p.location(), http.StatusFound)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(p.status)
	_ = pages.ExecuteTemplate(w, "error", struct {
		AADSTS  int
		Message string
	}{p.aadsts, p.message})
}

// SignIn does in Go what a person does in the browser: it opens
// authorizeURL (as AuthCodeURL built it) and picks the account whose
// UserPrincipalName, Mail or OID is account, or presses Cancel when account
// is empty. It returns where Microsoft would send the browser (the
// redirect URI with code and state, or with error), without following it.
// hc must not follow redirects itself; nil uses a client that does not.
func (s *Server) SignIn(ctx context.Context, hc *http.Client, authorizeURL, account string) (*url.URL, error) {
	if hc == nil {
		hc = &http.Client{}
	}
	noFollow := *hc
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authorizeURL, nil)
	if err != nil {
		return nil, fmt.Errorf("devidp: sign in: %w", err)
	}
	resp, err := noFollow.Do(req)
	if err != nil {
		return nil, fmt.Errorf("devidp: sign in: %w", err)
	}
	page, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode == http.StatusFound {
		return resp.Location()
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("devidp: sign in: authorize answered %d: %s", resp.StatusCode, firstLine(page))
	}
	form := url.Values{"cancel": {"1"}}
	if account != "" {
		var oid string
		for _, a := range s.accounts {
			if strings.EqualFold(account, a.UserPrincipalName) || (a.Mail != "" && strings.EqualFold(account, a.Mail)) || account == a.OID {
				oid = a.OID
			}
		}
		if oid == "" {
			return nil, fmt.Errorf("devidp: sign in: no test account %q", account)
		}
		form = url.Values{"account": {oid}}
	}
	req, err = http.NewRequestWithContext(ctx, http.MethodPost, authorizeURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("devidp: sign in: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err = noFollow.Do(req)
	if err != nil {
		return nil, fmt.Errorf("devidp: sign in: %w", err)
	}
	page, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		return nil, fmt.Errorf("devidp: sign in: choice answered %d: %s", resp.StatusCode, firstLine(page))
	}
	loc, err := resp.Location()
	if err != nil {
		return nil, fmt.Errorf("devidp: sign in: %w", err)
	}
	return loc, nil
}

func firstLine(b []byte) string {
	s := string(b)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// pages are the stand-in's HTML pages. html/template escapes every value.
var pages = template.Must(template.New("").Parse(`
{{define "head"}}<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.}}</title><style>
body{font-family:"Segoe UI",system-ui,sans-serif;background:#f2f2f2;margin:0;display:flex;justify-content:center}
main{background:#fff;box-shadow:0 2px 6px rgba(0,0,0,.2);margin-top:8vh;padding:44px;width:440px;max-width:90vw}
h1{font-size:24px;font-weight:600;margin:0 0 8px}.banner{font-size:12px;color:#605e5c;margin-bottom:16px}
form{margin:0}button.acct{display:block;width:100%;text-align:left;border:0;background:none;padding:12px 8px;cursor:pointer;border-bottom:1px solid #edebe9;font:inherit}
button.acct:hover,button.acct:focus{background:#f3f2f1}button.acct.hinted{background:#deecf9;border-left:3px solid #0067b8}
.name{font-weight:600}.upn,.kind{font-size:13px;color:#605e5c}.cancel{margin-top:24px;text-align:right}
.cancel button{background:#fff;border:1px solid #8a8886;padding:6px 20px;font:inherit;cursor:pointer}
table{border-collapse:collapse;width:100%;font-size:14px}td,th{padding:6px;border-bottom:1px solid #edebe9;text-align:left}
.err{color:#a4262c}code{font-size:12px}
</style></head><body><main>{{end}}
{{define "signin"}}{{template "head" "Sign in to your account"}}
<div class="banner">MEGDocs local Microsoft stand-in (devidp): not Microsoft</div>
<h1>Pick an account</h1>
{{range .Accounts}}<form method="post" action="{{$.Action}}"><input type="hidden" name="account" value="{{.OID}}">
<button class="acct{{if .Hinted}} hinted{{end}}" type="submit"{{if .Hinted}} autofocus{{end}} data-upn="{{.UserPrincipalName}}">
<div class="name">{{.DisplayName}}</div><div class="upn">{{.UserPrincipalName}}</div>
<div class="kind">{{if .Personal}}Personal account{{else}}Work or school account{{end}}</div></button></form>
{{else}}<p>No test account can sign in to tenant {{.Tenant}}.</p>{{end}}
<form method="post" action="{{.Action}}" class="cancel"><input type="hidden" name="cancel" value="1"><button type="submit">Cancel</button></form>
</main></body></html>{{end}}
{{define "error"}}{{template "head" "Sign in error"}}
<div class="banner">MEGDocs local Microsoft stand-in (devidp): not Microsoft</div>
<h1>Sorry, but we're having trouble signing you in.</h1>
<p class="err">AADSTS{{.AADSTS}}: {{.Message}}</p>
</main></body></html>{{end}}
`))
