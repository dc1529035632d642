// Package democms is a tiny stand-in for the MEGDocs CMS, used by `make run`
// and the browser test: it plays the CMS's part of the contract (server to
// server, with the CMS API key that never reaches the browser) so a person
// can click through connect, status, token, a Graph call and disconnect.
// Like the real CMS it has logged-in users (a "logged in as" switch between
// two of them) and completes each connect for the user logged in in the
// browser that comes back, taken from its session, never from the URL: so a
// person can replay a leaked connect link and see it connect nothing.
// It is development tooling and is never packaged for deployment.
package democms

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Options configure the demo.
type Options struct {
	// ConnectorURL is the handler's base URL (http://localhost:7071).
	ConnectorURL string
	// SelfURL is this page's base URL; return URLs point here.
	SelfURL string
	// CMSKey is the Bearer key for the connector's CMS API.
	CMSKey string
	// GraphURL is where "Call Graph /me" goes (the stand-in or Microsoft).
	GraphURL string
	// IdentityAdminURL links to the Microsoft stand-in's admin page
	// (revoke an account); empty with real Microsoft.
	IdentityAdminURL string
	HTTPClient       *http.Client
}

// Users are the demo's CMS users: the "logged in as" switch offers them.
// Two, so a person can replay a leaked connect link: start a connect as
// mara, switch to victor, finish the sign-in.
var Users = []string{"mara", "victor"}

// ReturnPath is where the connector sends the browser back (return_url).
const ReturnPath = "/microsoft/return"

// sessionCookie holds the demo session's id; the logged-in user lives on
// the server, as in a real CMS session, never in the URL or the cookie.
const sessionCookie = "megdocs_demo_session"

// maxSessions bounds the in-memory sessions: a demo on loopback, but a
// script hammering /login must not grow it without end.
const maxSessions = 1000

// Handler serves the demo.
type Handler struct {
	o   Options
	mux *http.ServeMux

	mu       sync.Mutex
	sessions map[string]*session
}

// session is one browser's demo login, plus the one-shot message shown on
// the next page (as Django's messages framework does).
type session struct {
	user  string
	flash *flash
}

type flash struct {
	Outcome string // stable, for tests: connected, user_mismatch, ...
	Text    string
	OK      bool
}

// New builds the demo handler.
func New(o Options) *Handler {
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	h := &Handler{o: o, mux: http.NewServeMux(), sessions: map[string]*session{}}
	h.mux.HandleFunc("GET /{$}", h.index)
	h.mux.HandleFunc("POST /login", h.login)
	h.mux.HandleFunc("POST /logout", h.logout)
	h.mux.HandleFunc("POST /connect", h.connect)
	h.mux.HandleFunc("POST /connect-link", h.connect)
	h.mux.HandleFunc("GET "+ReturnPath, h.complete)
	h.mux.HandleFunc("POST /token", h.token)
	h.mux.HandleFunc("POST /me", h.me)
	h.mux.HandleFunc("POST /disconnect", h.disconnect)
	h.mux.HandleFunc("GET /diagnostics", h.diagnosticsPage)
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

type view struct {
	UserID           string
	Users            []string
	Flash            *flash
	Banner           string
	Status           *status
	StatusCode       int
	Result           string
	ResultTitle      string
	ResultOK         bool
	ConnectLink      string
	IdentityAdminURL string
	ConnectorURL     string
}

type status struct {
	Status  string `json:"status"`
	Account struct {
		ID          string `json:"id"`
		TenantID    string `json:"tenant_id"`
		Email       string `json:"email"`
		DisplayName string `json:"display_name"`
	} `json:"account"`
	Scopes               []string `json:"scopes"`
	AccessTokenExpiresAt string   `json:"access_token_expires_at"`
	ConnectedAt          string   `json:"connected_at"`
	LastRefreshedAt      string   `json:"last_refreshed_at"`
	LastError            *struct {
		Code string `json:"code"`
		At   string `json:"at"`
	} `json:"last_error"`
}

// session returns the browser's session, or nil when it has none.
func (h *Handler) session(r *http.Request) *session {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sessions[c.Value]
}

// user is the logged-in demo user of this browser ("" when none): the
// only source of the user id for every call to the connector.
func (h *Handler) user(r *http.Request) string {
	if s := h.session(r); s != nil {
		h.mu.Lock()
		defer h.mu.Unlock()
		return s.user
	}
	return ""
}

func (h *Handler) setFlash(r *http.Request, f flash) {
	if s := h.session(r); s != nil {
		h.mu.Lock()
		s.flash = &f
		h.mu.Unlock()
	}
}

func (h *Handler) takeFlash(r *http.Request) *flash {
	s := h.session(r)
	if s == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	f := s.flash
	s.flash = nil
	return f
}

func (h *Handler) index(w http.ResponseWriter, r *http.Request) {
	h.render(r.Context(), w, view{UserID: h.user(r), Flash: h.takeFlash(r)})
}

// login is the "logged in as" switch: a new session for the chosen user,
// as logging in to a CMS starts one.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	user := r.FormValue("user")
	if !slices.Contains(Users, user) {
		http.Error(w, "unknown demo user", http.StatusBadRequest)
		return
	}
	id := rand.Text()
	h.mu.Lock()
	if old, err := r.Cookie(sessionCookie); err == nil {
		delete(h.sessions, old.Value)
	}
	if len(h.sessions) >= maxSessions {
		clear(h.sessions)
	}
	h.sessions[id] = &session{user: user}
	h.mu.Unlock()
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: id, Path: "/", HttpOnly: true,
		// Lax, not Strict: the browser comes back from Microsoft and the
		// connector in a top-level redirect, and must bring the session.
		SameSite: http.SameSiteLaxMode,
	})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		h.mu.Lock()
		delete(h.sessions, c.Value)
		h.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// connect asks the connector for a connect link for the logged-in user and
// sends the browser there; /connect-link shows the link instead, as a
// person who copies it to send it to someone else would see it.
func (h *Handler) connect(w http.ResponseWriter, r *http.Request) {
	user := h.user(r)
	if user == "" {
		h.render(r.Context(), w, view{ResultTitle: "Log in first", Result: "Pick a demo user above."})
		return
	}
	body, _ := json.Marshal(map[string]string{
		"user_id":    user,
		"return_url": h.o.SelfURL + ReturnPath,
		"login_hint": strings.TrimSpace(r.FormValue("login_hint")),
	})
	code, resp, err := h.call(r.Context(), http.MethodPost, "/api/connect-sessions", body)
	if err != nil || code != http.StatusCreated {
		h.render(r.Context(), w, view{UserID: user, ResultTitle: "Could not start connecting", Result: describe(code, resp, err)})
		return
	}
	var out struct {
		ConnectURL string `json:"connect_url"`
	}
	if err := json.Unmarshal(resp, &out); err != nil || out.ConnectURL == "" {
		h.render(r.Context(), w, view{UserID: user, ResultTitle: "Unexpected answer", Result: string(resp)})
		return
	}
	if r.URL.Path == "/connect-link" {
		h.render(r.Context(), w, view{UserID: user, ConnectLink: out.ConnectURL})
		return
	}
	http.Redirect(w, r, out.ConnectURL, http.StatusSeeOther)
}

// complete is the return page: the browser is back from the sign-in, and
// the connect is completed for the user logged in here, whatever user the
// link was made for. The connector refuses (user_mismatch) when they
// differ, so a connect link opened in another person's browser connects
// nothing.
func (h *Handler) complete(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	user := h.user(r)
	var f flash
	switch {
	case q.Get("microsoft") == "error":
		f = flash{Outcome: "error", Text: returnError(q.Get("reason"))}
	case q.Get("microsoft") != "signed_in":
		f = flash{Outcome: "unknown", Text: "This page is where Microsoft sign-ins come back to; there is nothing to finish here."}
	case user == "":
		f = flash{Outcome: "not_logged_in", Text: "You are not logged in to MEGDocs, so this Microsoft sign-in was not connected to anyone. Log in and click Connect to Microsoft again."}
	default:
		f = h.finish(r.Context(), user, q.Get("connect_code"))
	}
	if user == "" {
		h.render(r.Context(), w, view{Flash: &f})
		return
	}
	// Post/Redirect/Get: a reload must not send the spent code again.
	h.setFlash(r, f)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// finish completes the connect for user and says in plain words what
// happened.
func (h *Handler) finish(ctx context.Context, user, connectCode string) flash {
	body, _ := json.Marshal(map[string]string{"connect_code": connectCode})
	code, resp, err := h.call(ctx, http.MethodPost, "/api/connections/"+user+"/complete", body)
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(resp, &e)
	switch {
	case err == nil && code == http.StatusOK:
		var s status
		_ = json.Unmarshal(resp, &s)
		return flash{Outcome: "connected", OK: true, Text: fmt.Sprintf("Connected as %s (%s).", s.Account.DisplayName, s.Account.Email)}
	case e.Error == "user_mismatch":
		return flash{Outcome: "user_mismatch", Text: fmt.Sprintf(
			"This Microsoft sign-in was started by another MEGDocs user, not by you (%s). Nothing was connected, "+
				"neither to your account nor to theirs. If someone sent you a link to connect Microsoft, do not use it: "+
				"to connect your own Microsoft account, click Connect to Microsoft below.", user)}
	case e.Error == "invalid_connect_code" || (e.Error == "invalid_request" && connectCode == ""):
		return flash{Outcome: "invalid_connect_code", Text: "This Microsoft sign-in has expired or was already used. Nothing was connected. Click Connect to Microsoft to start again."}
	default:
		return flash{Outcome: "failed", Text: "Could not finish connecting Microsoft: " + describe(code, resp, err)}
	}
}

// returnError is what the demo says for each reason of microsoft=error
// (the contract's list; anything else reads as server_error).
func returnError(reason string) string {
	switch reason {
	case "access_denied":
		return "You cancelled connecting your Microsoft account. Nothing was connected."
	case "consent_required":
		return "Your organisation's Microsoft administrator must approve MEGDocs before you can connect."
	case "exchange_failed":
		return "Connecting your Microsoft account failed. Please try again."
	default:
		return "Microsoft is not responding. Please try again later."
	}
}

// loggedIn is the session's user; without one it shows "log in first".
func (h *Handler) loggedIn(w http.ResponseWriter, r *http.Request) (string, bool) {
	user := h.user(r)
	if user == "" {
		h.render(r.Context(), w, view{ResultTitle: "Log in first", Result: "Pick a demo user above."})
	}
	return user, user != ""
}

func (h *Handler) token(w http.ResponseWriter, r *http.Request) {
	user, ok := h.loggedIn(w, r)
	if !ok {
		return
	}
	code, resp, err := h.call(r.Context(), http.MethodPost, "/api/connections/"+user+"/token", nil)
	v := view{UserID: user, ResultTitle: "Token", Result: describe(code, resp, err)}
	if code == http.StatusOK {
		var t map[string]string
		_ = json.Unmarshal(resp, &t)
		tok := t["access_token"]
		if len(tok) > 12 {
			tok = tok[:12] + "…"
		}
		v.ResultOK = true
		v.Result = fmt.Sprintf("access_token: %s\ntoken_type: %s\nexpires_at: %s\nscope: %s", tok, t["token_type"], t["expires_at"], t["scope"])
	}
	h.render(r.Context(), w, v)
}

// me gets a token from the connector and calls Graph /v1.0/me with it, the
// way the CMS calls Graph.
func (h *Handler) me(w http.ResponseWriter, r *http.Request) {
	user, ok := h.loggedIn(w, r)
	if !ok {
		return
	}
	code, resp, err := h.call(r.Context(), http.MethodPost, "/api/connections/"+user+"/token", nil)
	if err != nil || code != http.StatusOK {
		h.render(r.Context(), w, view{UserID: user, ResultTitle: "Graph /me", Result: describe(code, resp, err)})
		return
	}
	var t map[string]string
	_ = json.Unmarshal(resp, &t)
	req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, h.o.GraphURL+"/v1.0/me", nil)
	req.Header.Set("Authorization", "Bearer "+t["access_token"])
	gr, err := h.o.HTTPClient.Do(req)
	v := view{UserID: user, ResultTitle: "Graph /me"}
	if err != nil {
		v.Result = err.Error()
	} else {
		b, _ := io.ReadAll(io.LimitReader(gr.Body, 64<<10))
		gr.Body.Close()
		v.ResultOK = gr.StatusCode == http.StatusOK
		v.Result = fmt.Sprintf("HTTP %d\n%s", gr.StatusCode, indent(b))
	}
	h.render(r.Context(), w, v)
}

func (h *Handler) disconnect(w http.ResponseWriter, r *http.Request) {
	user, ok := h.loggedIn(w, r)
	if !ok {
		return
	}
	code, resp, err := h.call(r.Context(), http.MethodDelete, "/api/connections/"+user, nil)
	v := view{UserID: user, ResultTitle: "Disconnect", Result: describe(code, resp, err), ResultOK: code == http.StatusNoContent}
	if code == http.StatusNoContent {
		v.Result = "Disconnected: the connector deleted the stored tokens."
	}
	h.render(r.Context(), w, v)
}

func (h *Handler) render(ctx context.Context, w http.ResponseWriter, v view) {
	v.IdentityAdminURL = h.o.IdentityAdminURL
	v.ConnectorURL = h.o.ConnectorURL
	v.Users = Users
	if v.UserID != "" {
		code, resp, err := h.call(ctx, http.MethodGet, "/api/connections/"+v.UserID, nil)
		v.StatusCode = code
		if err == nil && code == http.StatusOK {
			var s status
			if json.Unmarshal(resp, &s) == nil {
				v.Status = &s
			}
		} else if err != nil || code != http.StatusNotFound {
			v.Banner = "Status unavailable: " + describe(code, resp, err)
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_ = pageTmpl.Execute(w, v)
}

func (h *Handler) call(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, h.o.ConnectorURL+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+h.o.CMSKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.o.HTTPClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b, err
}

func describe(code int, body []byte, err error) string {
	if err != nil {
		return "the connector did not answer: " + err.Error()
	}
	if len(body) == 0 {
		return fmt.Sprintf("HTTP %d", code)
	}
	return fmt.Sprintf("HTTP %d\n%s", code, indent(body))
}

func indent(b []byte) string {
	var out bytes.Buffer
	if json.Indent(&out, b, "", "  ") == nil {
		return out.String()
	}
	return string(b)
}

var pageTmpl = template.Must(template.New("demo").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MEGDocs (demo CMS) · Microsoft</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#1f2328}
h1{font-size:1.3rem} h2{font-size:1rem;margin:0 0 .5rem} .card{border:1px solid #d0d7de;border-radius:8px;padding:1rem;margin:1rem 0}
.badge{display:inline-block;padding:.15rem .6rem;border-radius:1rem;font-weight:600}
.connected{background:#dafbe1;color:#1a7f37}.reconnect_required{background:#fff1e5;color:#bc4c00}.none{background:#eaeef2}
.banner{padding:.6rem 1rem;border-radius:6px;background:#ffebe9;border:1px solid #ff8182}.banner.ok{background:#dafbe1;border-color:#4ac26b}
.session{display:flex;align-items:center;gap:.5rem;flex-wrap:wrap;background:#f6f8fa}
.session form{display:inline;margin:0} .session .me{font-weight:600} button.current{font-weight:600;border:2px solid #0969da}
pre{background:#f6f8fa;padding:.75rem;border-radius:6px;overflow:auto;white-space:pre-wrap} button{margin:.2rem .3rem .2rem 0;padding:.4rem .8rem}
dl{display:grid;grid-template-columns:11rem 1fr;gap:.15rem 0} dt{font-weight:600} dd{margin:0}
.link{word-break:break-all;font-family:ui-monospace,monospace;font-size:.85rem} ol{margin:.3rem 0;padding-left:1.3rem} small{color:#57606a}
</style></head><body>
<h1>MEGDocs · Account settings · Microsoft <small>(demo CMS)</small></h1>
<div class="card session">
{{if .UserID}}<span>Logged in as <span id="logged-in-as" class="me">{{.UserID}}</span>.</span>{{else}}<span id="logged-in-as" class="me">Not logged in.</span>{{end}}
<span>{{if .UserID}}Switch user:{{else}}Log in as:{{end}}</span>
{{range .Users}}<form method="post" action="/login"><input type="hidden" name="user" value="{{.}}"><button id="login-{{.}}" type="submit"{{if eq . $.UserID}} class="current"{{end}}>{{.}}</button></form>{{end}}
{{if .UserID}}<form method="post" action="/logout"><button id="logout" type="submit">Log out</button></form>{{end}}
</div>
{{if not .UserID}}<p id="intro">This demo CMS has two users, mara and victor (no passwords). Log in as one of them to connect their Microsoft account.</p>{{end}}
{{if .Flash}}<p id="banner" class="banner{{if .Flash.OK}} ok{{end}}" data-outcome="{{.Flash.Outcome}}">{{.Flash.Text}}</p>{{end}}
{{if .Banner}}<p id="status-banner" class="banner">{{.Banner}}</p>{{end}}
{{if .UserID}}
<div class="card" id="status-card">
<h2>Microsoft connection of {{.UserID}}</h2>
{{if .Status}}
<p>Status: <span id="status" class="badge {{.Status.Status}}">{{if eq .Status.Status "connected"}}Connected{{else}}Reconnect required{{end}}</span></p>
<dl><dt>Account</dt><dd id="account-email">{{.Status.Account.Email}}</dd>
<dt>Name</dt><dd id="account-name">{{.Status.Account.DisplayName}}</dd>
<dt>Access token expires</dt><dd id="token-expiry">{{.Status.AccessTokenExpiresAt}}</dd>
<dt>Connected at</dt><dd>{{.Status.ConnectedAt}}</dd>
<dt>Last refreshed</dt><dd>{{.Status.LastRefreshedAt}}</dd>
<dt>Last error</dt><dd id="last-error">{{if .Status.LastError}}{{.Status.LastError.Code}} at {{.Status.LastError.At}}{{else}}none{{end}}</dd></dl>
{{else}}<p>Status: <span id="status" class="badge none">Not connected</span></p>{{end}}
<form method="post" action="/connect" style="display:inline"><button id="connect" type="submit">{{if .Status}}Reconnect{{else}}Connect{{end}} to Microsoft</button></form>
<form method="post" action="/token" style="display:inline"><button id="fetch-token" type="submit">Fetch token</button></form>
<form method="post" action="/me" style="display:inline"><button id="call-me" type="submit">Call Graph /me</button></form>
<form method="post" action="/disconnect" style="display:inline"><button id="disconnect" type="submit">Disconnect</button></form>
</div>
{{end}}
{{if .Result}}<div class="card"><h2>{{.ResultTitle}}</h2><pre id="result" data-ok="{{.ResultOK}}">{{.Result}}</pre></div>{{end}}
{{if .ConnectLink}}<div class="card" id="connect-link-card"><h2>Connect link for {{.UserID}} (not opened)</h2>
<p class="link"><a id="connect-link" href="{{.ConnectLink}}">{{.ConnectLink}}</a></p>
<p>Copy it. Then switch to the other user above (this browser becomes theirs), paste the link into the address bar and sign in with any account.</p>
<p><small>Only this demo shows a connect link: a real CMS never shows, sends or logs it, it only redirects its own user's browser there.</small></p></div>{{end}}
{{if .UserID}}<div class="card"><h2>Replay the leaked-link attack</h2>
<ol><li>Logged in as one user, click <i>Create a connect link</i>: the link a person would copy instead of following it, and send to a colleague.</li>
<li>Switch to the other user (the colleague's browser), open the link, sign in with any account.</li>
<li>Back here, the colleague sees that the sign-in was started by another MEGDocs user, and nothing is connected for either of you.</li></ol>
<form method="post" action="/connect-link"><button id="connect-link-create" type="submit">Create a connect link (don't open it)</button></form></div>{{end}}
<p><small>Connector: {{.ConnectorURL}} · <a id="diagnostics" href="/diagnostics">diagnostics</a>{{if .IdentityAdminURL}} · Microsoft stand-in: <a id="idp-admin" href="{{.IdentityAdminURL}}" target="_blank" rel="noopener">revoke an account</a>{{end}}</small></p>
</body></html>
`))
