// Package democms is a tiny stand-in for the MEGDocs CMS, used by `make run`
// and the browser test: it plays the CMS's part of the contract (server to
// server, with the CMS API key that never reaches the browser) so a person
// can click through connect, status, token, a Graph call and disconnect.
// It is development tooling and is never packaged for deployment.
package democms

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"strings"
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

// Handler serves the demo.
type Handler struct {
	o   Options
	mux *http.ServeMux
}

// New builds the demo handler.
func New(o Options) *Handler {
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	h := &Handler{o: o, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /{$}", h.index)
	h.mux.HandleFunc("POST /connect", h.connect)
	h.mux.HandleFunc("POST /token", h.token)
	h.mux.HandleFunc("POST /me", h.me)
	h.mux.HandleFunc("POST /disconnect", h.disconnect)
	h.mux.HandleFunc("GET /diagnostics", h.diagnosticsPage)
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

type view struct {
	UserID           string
	Banner, BannerOK string
	Status           *status
	StatusCode       int
	Result           string
	ResultTitle      string
	ResultOK         bool
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

func userOf(r *http.Request) string {
	if v := strings.TrimSpace(r.FormValue("user")); v != "" {
		return v
	}
	return "42"
}

func (h *Handler) index(w http.ResponseWriter, r *http.Request) {
	v := view{UserID: userOf(r)}
	switch r.URL.Query().Get("microsoft") {
	case "connected":
		v.Banner, v.BannerOK = "Connected successfully!", "ok"
	case "error":
		v.Banner = "Microsoft connection failed: " + r.URL.Query().Get("reason")
	}
	h.render(r.Context(), w, v)
}

// connect asks the connector for a connect link and sends the browser there.
func (h *Handler) connect(w http.ResponseWriter, r *http.Request) {
	user := userOf(r)
	body, _ := json.Marshal(map[string]string{
		"user_id":    user,
		"return_url": h.o.SelfURL + "/?user=" + url.QueryEscape(user),
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
	http.Redirect(w, r, out.ConnectURL, http.StatusSeeOther)
}

func (h *Handler) token(w http.ResponseWriter, r *http.Request) {
	user := userOf(r)
	code, resp, err := h.call(r.Context(), http.MethodPost, "/api/connections/"+url.PathEscape(user)+"/token", nil)
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
	user := userOf(r)
	code, resp, err := h.call(r.Context(), http.MethodPost, "/api/connections/"+url.PathEscape(user)+"/token", nil)
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
	user := userOf(r)
	code, resp, err := h.call(r.Context(), http.MethodDelete, "/api/connections/"+url.PathEscape(user), nil)
	v := view{UserID: user, ResultTitle: "Disconnect", Result: describe(code, resp, err), ResultOK: code == http.StatusNoContent}
	if code == http.StatusNoContent {
		v.Result = "Disconnected: the connector deleted the stored tokens."
	}
	h.render(r.Context(), w, v)
}

func (h *Handler) render(ctx context.Context, w http.ResponseWriter, v view) {
	v.IdentityAdminURL = h.o.IdentityAdminURL
	v.ConnectorURL = h.o.ConnectorURL
	code, resp, err := h.call(ctx, http.MethodGet, "/api/connections/"+url.PathEscape(v.UserID), nil)
	v.StatusCode = code
	if err == nil && code == http.StatusOK {
		var s status
		if json.Unmarshal(resp, &s) == nil {
			v.Status = &s
		}
	} else if err != nil || code != http.StatusNotFound {
		v.Banner = "Status unavailable: " + describe(code, resp, err)
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
h1{font-size:1.3rem} .card{border:1px solid #d0d7de;border-radius:8px;padding:1rem;margin:1rem 0}
.badge{display:inline-block;padding:.15rem .6rem;border-radius:1rem;font-weight:600}
.connected{background:#dafbe1;color:#1a7f37}.reconnect_required{background:#fff1e5;color:#bc4c00}.none{background:#eaeef2}
.banner{padding:.6rem 1rem;border-radius:6px;background:#ffebe9}.banner.ok{background:#dafbe1}
pre{background:#f6f8fa;padding:.75rem;border-radius:6px;overflow:auto} button{margin:.2rem .3rem .2rem 0;padding:.4rem .8rem}
dl{display:grid;grid-template-columns:11rem 1fr;gap:.15rem 0} dt{font-weight:600} dd{margin:0}
</style></head><body>
<h1>MEGDocs · Account settings · Microsoft <small>(demo CMS)</small></h1>
{{if .Banner}}<p id="banner" class="banner {{.BannerOK}}">{{.Banner}}</p>{{end}}
<div class="card">
<form method="get" action="/"><label>CMS user id <input id="user-id" name="user" value="{{.UserID}}"></label>
<button id="show" type="submit">Show status</button></form>
</div>
<div class="card" id="status-card">
{{if .Status}}
<p>Status: <span id="status" class="badge {{.Status.Status}}">{{if eq .Status.Status "connected"}}Connected{{else}}Reconnect required{{end}}</span></p>
<dl><dt>Account</dt><dd id="account-email">{{.Status.Account.Email}}</dd>
<dt>Name</dt><dd id="account-name">{{.Status.Account.DisplayName}}</dd>
<dt>Access token expires</dt><dd id="token-expiry">{{.Status.AccessTokenExpiresAt}}</dd>
<dt>Connected at</dt><dd>{{.Status.ConnectedAt}}</dd>
<dt>Last refreshed</dt><dd>{{.Status.LastRefreshedAt}}</dd>
<dt>Last error</dt><dd id="last-error">{{if .Status.LastError}}{{.Status.LastError.Code}} at {{.Status.LastError.At}}{{else}}none{{end}}</dd></dl>
{{else}}<p>Status: <span id="status" class="badge none">Not connected</span></p>{{end}}
<form method="post" action="/connect" style="display:inline"><input type="hidden" name="user" value="{{.UserID}}">
<button id="connect" type="submit">{{if .Status}}Reconnect{{else}}Connect{{end}} to Microsoft</button></form>
<form method="post" action="/token" style="display:inline"><input type="hidden" name="user" value="{{.UserID}}"><button id="fetch-token" type="submit">Fetch token</button></form>
<form method="post" action="/me" style="display:inline"><input type="hidden" name="user" value="{{.UserID}}"><button id="call-me" type="submit">Call Graph /me</button></form>
<form method="post" action="/disconnect" style="display:inline"><input type="hidden" name="user" value="{{.UserID}}"><button id="disconnect" type="submit">Disconnect</button></form>
</div>
{{if .Result}}<div class="card"><h2 style="font-size:1rem">{{.ResultTitle}}</h2><pre id="result" data-ok="{{.ResultOK}}">{{.Result}}</pre></div>{{end}}
<p><small>Connector: {{.ConnectorURL}} · <a id="diagnostics" href="/diagnostics">diagnostics</a>{{if .IdentityAdminURL}} · Microsoft stand-in: <a id="idp-admin" href="{{.IdentityAdminURL}}" target="_blank" rel="noopener">revoke an account</a>{{end}}</small></p>
</body></html>
`))
