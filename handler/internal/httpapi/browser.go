package httpapi

import (
	"html/template"
	"net/http"

	"github.com/megdocs/msconnector/handler/internal/connectflow"
	"github.com/megdocs/msconnector/handler/internal/connection"
)

func (s *Server) connect(w http.ResponseWriter, r *http.Request) {
	b, err := s.Flow.BeginConnect(r.Context(), r.URL.Query().Get("session"))
	if err != nil {
		s.browserError(w, r, err)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: StateCookie, Value: b.Cookie, Path: s.Config.CallbackPath(),
		Expires: b.ExpiresAt, MaxAge: int(connectflow.StateTTL.Seconds()),
		HttpOnly: true, Secure: s.Config.SecureCookies(), SameSite: http.SameSiteLaxMode,
	})
	http.Redirect(w, r, b.AuthURL, http.StatusFound)
}

func (s *Server) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	cb := connectflow.Callback{
		Code: q.Get("code"), State: q.Get("state"),
		Error: q.Get("error"), ErrorDescription: q.Get("error_description"),
	}
	if c, err := r.Cookie(StateCookie); err == nil {
		cb.Cookie = c.Value
	}
	to, err := s.Flow.HandleCallback(r.Context(), cb)
	if connection.ErrorCode(err) == connection.EStateInvalid {
		s.Log.Warn().Str("event", "oauth_failed").Str("reason", "invalid_state").Msg("callback with an unknown, used, expired or foreign state")
	}
	if err != nil {
		s.browserError(w, r, err)
		return
	}
	// The state is used up: clear its cookie.
	http.SetCookie(w, &http.Cookie{
		Name: StateCookie, Value: "", Path: s.Config.CallbackPath(), MaxAge: -1,
		HttpOnly: true, Secure: s.Config.SecureCookies(), SameSite: http.SameSiteLaxMode,
	})
	http.Redirect(w, r, to, http.StatusFound)
}

// pages are the browser routes' answers by error code, with the status
// from the one table (statusOf).
var pages = map[string]struct{ title, text string }{
	connection.ELinkInvalid:  {"This link has expired", "This connect link has expired or was already used. Go back to MEGDocs and start connecting your Microsoft account again."},
	connection.EStateInvalid: {"This sign-in cannot be completed", "This sign-in link is no longer valid, or it was opened in another browser. Go back to MEGDocs and start connecting your Microsoft account again."},
}

// browserError answers a browser route's error with a page, not JSON. An
// error without a page of its own is an internal failure: a page without
// detail (the log has it).
func (s *Server) browserError(w http.ResponseWriter, r *http.Request, err error) {
	code, status := errorStatus(err)
	p, ok := pages[code]
	if !ok {
		s.Log.Error().Str("event", "internal_error").Str("route", r.Pattern).Err(err).Msg("browser request failed")
		p.title, p.text = "Something went wrong", "MEGDocs could not start or finish connecting your Microsoft account. Please try again from MEGDocs in a few minutes."
		status = statusOf[connection.EInternal]
	}
	page(w, status, p.title, p.text)
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer"><title>{{.Title}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}h1{font-size:1.4rem}</style>
</head><body><h1>{{.Title}}</h1><p>{{.Text}}</p></body></html>
`))

// page writes a plain HTML page; nothing on it links or redirects anywhere.
func page(w http.ResponseWriter, status int, title, text string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	w.WriteHeader(status)
	_ = pageTmpl.Execute(w, struct{ Title, Text string }{title, text})
}
