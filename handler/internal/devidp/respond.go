package devidp

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Response is an answer FailNext injects in place of the token endpoint's
// own. Build it with OAuthError (Microsoft's error JSON, rendered with fresh
// trace IDs and the server's clock when served) or fill Body for anything
// else (malformed JSON, an HTML page, a huge body).
type Response struct {
	Status int
	Header http.Header
	Body   []byte

	oauth *oauthError
}

// oauthError is one of Microsoft's token endpoint errors.
type oauthError struct {
	status   int
	code     string // error
	aadsts   int
	message  string // AADSTS text after "AADSTSnnn: "
	suberror string
}

// OAuthError is Microsoft's token endpoint error: status, `error` code,
// the AADSTS number and its message. The body is rendered exactly as
// Microsoft sends it (error_description "AADSTSn: message\r\nTrace ID:
// ...\r\nCorrelation ID: ...\r\nTimestamp: ...", error_codes, timestamp,
// trace_id, correlation_id, error_uri).
func OAuthError(status int, code string, aadsts int, message string) Response {
	return Response{Status: status, oauth: &oauthError{status: status, code: code, aadsts: aadsts, message: message}}
}

// WithSuberror adds Microsoft's suberror field (bad_token,
// consent_required, ...) to an OAuthError.
func (r Response) WithSuberror(s string) Response {
	if r.oauth != nil {
		o := *r.oauth
		o.suberror = s
		r.oauth = &o
	}
	return r
}

// WithHeader returns r with a header added (Retry-After, say).
func (r Response) WithHeader(key, value string) Response {
	h := r.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Add(key, value)
	r.Header = h
	return r
}

// Throttled is a 429 with Retry-After, as Microsoft's gateway answers a
// client that sends too many requests.
func Throttled(retryAfter time.Duration) Response {
	return OAuthError(http.StatusTooManyRequests, "temporarily_unavailable", 90033,
		"A transient error has occurred. Please try again.").
		WithHeader("Retry-After", strconv.Itoa(int(retryAfter/time.Second)))
}

// write serves r.
func (r Response) write(w http.ResponseWriter, s *Server, req *http.Request) {
	for k, vs := range r.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	if r.oauth != nil {
		s.writeOAuthError(w, req, *r.oauth)
		return
	}
	status := r.Status
	if status == 0 {
		status = http.StatusOK
	}
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
	}
	w.WriteHeader(status)
	_, _ = w.Write(r.Body)
}

// msTimestamp is the format of Microsoft's `timestamp` field.
const msTimestamp = "2006-01-02 15:04:05Z"

// writeOAuthError renders Microsoft's error JSON.
func (s *Server) writeOAuthError(w http.ResponseWriter, r *http.Request, e oauthError) {
	trace, corr := newGUID(), newGUID()
	if c := r.Header.Get("client-request-id"); c != "" {
		corr = c
	}
	ts := s.now().UTC().Format(msTimestamp)
	body := map[string]any{
		"error": e.code,
		"error_description": fmt.Sprintf("AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s",
			e.aadsts, e.message, trace, corr, ts),
		"error_codes":    []int{e.aadsts},
		"timestamp":      ts,
		"trace_id":       trace,
		"correlation_id": corr,
		"error_uri":      fmt.Sprintf("%s/error?code=%d", baseURL(r), e.aadsts),
	}
	if e.suberror != "" {
		body["suberror"] = e.suberror
	}
	w.Header().Set("x-ms-request-id", trace)
	s.log.Info().Str("event", "devidp_error").Str("path", r.URL.Path).Str("code", e.code).Int("aadsts", e.aadsts).Msg("token endpoint refused")
	writeJSON(w, e.status, body)
}

// writeJSON sends v with Microsoft's no-cache headers.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "devidp: encode: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store, no-cache")
	w.Header().Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// graphError writes Graph's error shape.
func (s *Server) graphError(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	reqID := newGUID()
	clientReqID := r.Header.Get("client-request-id")
	if clientReqID == "" {
		clientReqID = reqID
	}
	w.Header().Set("request-id", reqID)
	w.Header().Set("client-request-id", clientReqID)
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="", authorization_uri="`+baseURL(r)+`/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"`)
	}
	writeJSON(w, status, map[string]any{"error": map[string]any{
		"code":    code,
		"message": message,
		"innerError": map[string]any{
			"date":              s.now().UTC().Format("2006-01-02T15:04:05"),
			"request-id":        reqID,
			"client-request-id": clientReqID,
		},
	}})
}
