package httpapi

import (
	"net/http"
	"path"
	"strings"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// probeMethods are the methods routeFallbacks asks the mux about to build
// a 405's Allow header. A GET pattern also serves HEAD.
var probeMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// errNoRoute is the contract's 404 for a path no route serves.
var errNoRoute = &connection.Error{Code: connection.ENotFound, Message: "no such route"}

// routeFallbacks answers what no route of mux serves with the contract's
// JSON instead of ServeMux's plain text, for every path (the Functions host
// matches routes without regard to case and forwards the path as sent, so
// the handler sees paths no function was meant for): 404 not_found for an
// unknown path, 405 method_not_allowed with an Allow header for a known
// path with another method. A path ServeMux would redirect to its cleaned
// form (`//`, `.`, `..` segments) is not a route either: 404, never a
// redirect.
func routeFallbacks(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.EscapedPath(); cleanPath(p) != p {
			respond(w, errNoRoute)
			return
		}
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		var allow []string
		for _, m := range probeMethods {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "" {
				allow = append(allow, m)
			}
		}
		if len(allow) == 0 {
			respond(w, errNoRoute)
			return
		}
		w.Header().Set("Allow", strings.Join(allow, ", "))
		respond(w, connection.Errorf(connection.EMethodNotAllowed, "this route does not take %s; it takes %s", r.Method, strings.Join(allow, ", ")))
	})
}

// cleanPath is ServeMux's own: the path.Clean of p, keeping a trailing
// slash. A path it changes is one ServeMux redirects.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

// queryParam is a query parameter a route reads.
type queryParam struct {
	name string
	// opaque: a token this service or Microsoft issued (session, state,
	// cursor), whose alphabet has no comma. A comma in it means the
	// Functions host joined a repeated key ("?state=a&state=b" arrives as
	// "state=a,b"), which is refused like the repeat itself.
	opaque bool
}

// singleValued refuses a request that repeats a query parameter the route
// reads before the route sees it: Go would silently take the first value
// where the Functions host passes them comma-joined, so the two would
// disagree about what was asked. The refusal is the route's own kind of
// answer: refuse (nil: 400 invalid_request naming the parameter, for the
// CMS's JSON routes; browser routes pass their HTML page).
func singleValued(params []queryParam, refuse func(w http.ResponseWriter, r *http.Request, err error), h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		for _, p := range params {
			vs := q[p.name]
			if len(vs) > 1 || (p.opaque && len(vs) == 1 && strings.Contains(vs[0], ",")) {
				err := connection.Errorf(connection.EInvalid, "query parameter %s is given more than once", p.name)
				if refuse != nil {
					refuse(w, r, err)
					return
				}
				respond(w, err)
				return
			}
		}
		h(w, r)
	}
}

// refuseAs answers a browser route's repeated parameter with that route's
// page for a link or state it cannot use (contract: a plain HTML page, no
// redirect), logging why.
func (s *Server) refuseAs(code string) func(w http.ResponseWriter, r *http.Request, err error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		s.Log.Warn().Str("event", "invalid_request").Str("route", r.Pattern).Err(err).Msg("repeated query parameter")
		s.browserError(w, r, &connection.Error{Code: code, Message: connection.ErrorMessage(err), Err: err})
	}
}
