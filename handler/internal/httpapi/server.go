// Package httpapi is the connector's HTTP surface: every route of the
// contract registered in one place, thin handlers (decode, call the domain,
// encode), the CMS key check, and the one mapping from domain errors to the
// contract's status codes and error JSON. Business rules live elsewhere.
package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/config"
	"github.com/megdocs/msconnector/handler/internal/connectflow"
	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/tokens"
)

// MaxBody is the contract's request body limit.
const MaxBody = 64 << 10

// StateCookie carries the browser-binding secret from /api/connect to the
// callback.
const StateCookie = "msconnect_state"

// CMSKeys returns the accepted CMS API keys: the current one and, while
// rotating, the previous one (empty when none). An error means the current
// key cannot be read (503 not_configured).
type CMSKeys func(ctx context.Context) (current, previous string, err error)

// Server holds the handlers' dependencies. Fields may be nil when their
// settings are missing; the routes that need them then answer 503.
type Server struct {
	Config  config.Config
	Flow    *connectflow.Service
	Tokens  *tokens.Service
	Store   connection.Store
	Events  connection.Publisher
	Keys    CMSKeys
	Refresh http.Handler // POST /refresh (the timer), speaking the host protocol
	// Webhook is POST /webhook: the queue trigger of the webhook
	// deliveries' queue, speaking the host protocol. Nil without
	// CMS_WEBHOOK_URL: the host then gets 503 and, after maxDequeueCount,
	// moves the message to the poison queue, where nothing is lost.
	Webhook http.Handler
	Log     zerolog.Logger
	// Now is the clock, required (time.Now in production): Handler
	// panics without it.
	Now func() time.Time

	// Diagnostics serves GET /api/diagnostics (diagnostics.go); nil answers
	// 503 not_configured.
	Diagnostics Diagnoser
}

// Handler returns the routes. Every route of the contract is here and only
// here; the infra cross-check test reads these patterns.
// It panics without s.Now: the Server does not choose a clock of its own.
func (s *Server) Handler() http.Handler {
	if s.Now == nil {
		panic("httpapi: Server.Now is required")
	}
	mux := http.NewServeMux()
	storage := []config.Area{config.AreaStorage}
	ms := []config.Area{config.AreaStorage, config.AreaMicrosoft}

	// The host polls GET / until it answers: never wait for anything.
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})

	flow, tok, store := s.Flow != nil, s.Tokens != nil, s.Store != nil
	var refresh http.HandlerFunc
	if s.Refresh != nil {
		refresh = s.Refresh.ServeHTTP
	}
	mux.Handle("POST /api/connect-sessions", s.requireCMSKey(s.requireConfigured(append(ms, config.AreaReturnURLs), flow, s.createSession)))
	mux.Handle("GET /api/connect", s.browser(singleValued(connectParams, s.refuseAs(connection.ELinkInvalid), s.requireConfigured(ms, flow, s.connect))))
	mux.Handle("GET /api/callback", s.browser(singleValued(callbackParams, s.refuseAs(connection.EStateInvalid), s.requireConfigured(ms, flow, s.callback))))
	mux.Handle("GET /api/connections", s.requireCMSKey(singleValued(listParams, nil, s.requireConfigured(storage, store, s.listConnections))))
	mux.Handle("GET /api/connections/{user_id}", s.requireCMSKey(s.requireConfigured(storage, store, s.getConnection)))
	mux.Handle("DELETE /api/connections/{user_id}", s.requireCMSKey(s.requireConfigured(storage, store, s.deleteConnection)))
	mux.Handle("POST /api/connections/{user_id}/complete", s.requireCMSKey(s.requireConfigured(storage, flow, s.complete)))
	mux.Handle("POST /api/connections/{user_id}/token", s.requireCMSKey(s.requireConfigured(append(ms, config.AreaRefresh), tok, s.token)))
	// Diagnostics needs only the CMS key: it reports what else is missing.
	mux.Handle("GET /api/diagnostics", s.requireCMSKey(s.requireConfigured(nil, s.Diagnostics != nil, s.diagnostics)))
	mux.Handle("POST /refresh", s.requireConfigured(append(ms, config.AreaRefresh), refresh != nil, refresh))
	var webhook http.HandlerFunc
	if s.Webhook != nil {
		webhook = s.Webhook.ServeHTTP
	}
	mux.Handle("POST /webhook", s.requireConfigured([]config.Area{config.AreaWebhook}, webhook != nil, webhook))

	// Anything else, on any path, is the contract's JSON 404 or 405;
	// except a path below /api/connections/ whose {user_id} segment is not
	// a valid id (the segment %2F unescapes to "/", which the mux takes
	// for a path separator; "." and ".." it would clean away): the
	// contract answers an invalid id 400 on every route that takes one.
	return s.logged(recoverer(s.Log, rejectBadUserSegment(routeFallbacks(mux))))
}

// The query parameters each route reads (see singleValued).
var (
	connectParams  = []queryParam{{name: "session", opaque: true}}
	callbackParams = []queryParam{{name: "code"}, {name: "state", opaque: true}, {name: "error"}, {name: "error_description"}}
	listParams     = []queryParam{{name: "status"}, {name: "limit"}, {name: "cursor", opaque: true}}
)

// rejectBadUserSegment answers 400 invalid_request for a path below
// /api/connections/ whose first segment, unescaped, is not a valid user_id,
// before the mux can route, redirect or 404 it.
func rejectBadUserSegment(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if badUserSegment(r.URL.EscapedPath()) {
			respond(w, connection.ErrInvalidUserID)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// badUserSegment reports a path below /api/connections/ whose first
// segment, unescaped, is not a valid user_id.
func badUserSegment(escapedPath string) bool {
	const prefix = "/api/connections/"
	if len(escapedPath) < len(prefix) || !strings.EqualFold(escapedPath[:len(prefix)], prefix) {
		return false
	}
	seg, _, _ := strings.Cut(escapedPath[len(prefix):], "/")
	id, err := url.PathUnescape(seg)
	return err != nil || connection.ValidUserID(id) != nil
}

// requireConfigured answers 503 not_configured while a setting the route
// depends on is missing or malformed (the start-up log names it), or while
// the component it calls could not be built (the start-up log says why).
func (s *Server) requireConfigured(areas []config.Area, built bool, h http.HandlerFunc) http.HandlerFunc {
	missing := s.Config.Missing(areas...)
	if len(missing) == 0 && built {
		return h
	}
	names := make([]string, 0, len(missing))
	for _, p := range missing {
		names = append(names, p.Setting)
	}
	msg := "the service is not configured: see the start-up log"
	if len(names) > 0 {
		msg += " for " + strings.Join(dedupe(names), ", ")
	}
	notConfigured := &connection.Error{Code: connection.ENotConfigured, Message: msg}
	return func(w http.ResponseWriter, r *http.Request) {
		respond(w, notConfigured)
	}
}

// Answers of requireCMSKey.
var (
	errNoCMSKey     = &connection.Error{Code: connection.ENotConfigured, Message: "the CMS API key is not configured"}
	errUnauthorized = &connection.Error{Code: connection.EUnauthorized, Message: "missing or wrong CMS API key"}
)

// requireCMSKey requires the CMS's Bearer key, compared in constant time
// against the current and the previous key.
func (s *Server) requireCMSKey(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if s.Keys == nil {
			respond(w, errNoCMSKey)
			return
		}
		current, previous, err := s.Keys(r.Context())
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		given, ok := bearer(r.Header.Get("Authorization"))
		if !ok || !keyMatches(given, current, previous) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="megdocs-microsoft-connector"`)
			respond(w, errUnauthorized)
			return
		}
		h(w, r)
	}
}

// browser sets the headers every browser-facing response carries: nothing
// cached, no Referer leaking codes or states to the next site.
func (s *Server) browser(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Frame-Options", "DENY")
		h(w, r)
	}
}

func bearer(h string) (string, bool) {
	const prefix = "bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", false
	}
	return strings.TrimSpace(h[len(prefix):]), true
}

// keyMatches compares digests so neither the keys' lengths nor the position
// of the first difference leak; both keys are always compared.
func keyMatches(given, current, previous string) bool {
	g := sha256.Sum256([]byte(given))
	c := sha256.Sum256([]byte(current))
	p := sha256.Sum256([]byte(previous))
	okCurrent := subtle.ConstantTimeCompare(g[:], c[:]) & boolInt(current != "")
	okPrevious := subtle.ConstantTimeCompare(g[:], p[:]) & boolInt(previous != "")
	return okCurrent|okPrevious == 1
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	out := in[:0]
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func (s *Server) now() time.Time { return s.Now().UTC() }
