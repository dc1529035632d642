package httpapi

import (
	"errors"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/rs/zerolog"
)

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// logged writes one line per request: the route pattern, never the URL
// (query strings carry codes, states and session tokens).
func (s *Server) logged(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			next.ServeHTTP(w, r) // the host's readiness polls: too many to log
			return
		}
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		// Handlers below (the timer's protocol adapter) log through the
		// request's context.
		r = r.WithContext(s.Log.WithContext(r.Context()))
		next.ServeHTTP(sw, r)
		ev := s.Log.Info()
		if sw.status >= 500 {
			ev = s.Log.Error()
		}
		if id := r.PathValue("user_id"); id != "" {
			ev = ev.Str("user_id", id)
		}
		if inv := r.Header.Get("X-Azure-Functions-InvocationId"); inv != "" {
			ev = ev.Str("invocation_id", inv)
		}
		ev.Str("event", "request").Str("method", r.Method).Str("route", r.Pattern).
			Int("status", sw.status).Float64("duration_ms", float64(time.Since(start).Microseconds())/1000).Msg("")
	})
}

// errPanic answers a recovered panic: it has no code, so 500 internal_error.
var errPanic = errors.New("httpapi: handler panicked")

// recoverer turns a panic into a 500 without detail and a log line: the
// process keeps serving (an exit would restart the worker).
func recoverer(log zerolog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.Error().Str("event", "panic").Interface("panic", v).Str("stack", string(debug.Stack())).Msg("handler panicked")
				respond(w, errPanic) // logged above, with the stack
			}
		}()
		next.ServeHTTP(w, r)
	})
}
