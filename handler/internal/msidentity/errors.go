package msidentity

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// Codes this package sets on *Error when Microsoft's body carried none.
// Microsoft's own codes (invalid_grant, invalid_client, ...) are passed
// through unchanged.
const (
	// CodeThrottled: the refresh was not sent because a 429 paused this
	// instance's refreshes and the pause has not ended, or a 429 came
	// without Microsoft's error JSON.
	CodeThrottled = "throttled"
	// CodeNetworkError: no HTTP answer (connection refused or reset,
	// timeout, cancelled context).
	CodeNetworkError = "network_error"
	// CodeInvalidResponse: an answer this package cannot use: a success
	// that is not Microsoft's token or profile JSON (malformed, oversized,
	// no access_token), or an error page that is not Microsoft's error JSON.
	CodeInvalidResponse = "invalid_response"
)

// Error is a failed call to the token endpoint or Graph. It carries
// Microsoft's protocol fields so callers branch on them with errors.As, and
// implements connection.ClassifiedError and connection.RetryAfterError.
//
// Error() and MarshalZerologObject never include Description: Microsoft's
// error_description can name the user (UPN, tenant) and belongs in neither
// logs nor messages to the CMS. Nothing here ever holds a token.
type Error struct {
	// Op is the call that failed: "exchange", "refresh" or "me".
	Op string
	// HTTPStatus is the response's status; 0 when no response came.
	HTTPStatus int
	// Code is Microsoft's `error` (token endpoint) or `error.code` (Graph),
	// else one of this package's Code* constants.
	Code string
	// ErrorCodes are the AADSTS numbers (`error_codes`).
	ErrorCodes []int
	// TraceID, CorrelationID: for Microsoft support (Graph: request-id and
	// client-request-id).
	TraceID, CorrelationID string
	// Suberror refines some codes (bad_token, consent_required, ...).
	Suberror string
	// Timestamp is Microsoft's, as sent.
	Timestamp string
	// Description is error_description (Graph: error.message). It may
	// contain personal data: never log it.
	Description string
	// Delay is the pause Microsoft asked for (Retry-After, or this
	// package's default for a 429 or AADSTS50196), or what remains of the
	// instance's refresh pause for a refresh that was not sent (Err is then
	// connection.ErrPaused). RetryAfter returns it.
	Delay time.Duration
	// Err is the underlying failure for network errors and unusable
	// answers (nil for Microsoft's protocol errors).
	Err error

	// retryAfterSent records that Microsoft sent a Retry-After header, so
	// an explicit "Retry-After: 0" is not replaced by a default pause.
	retryAfterSent bool
}

var (
	_ connection.ClassifiedError = (*Error)(nil)
	_ connection.RetryAfterError = (*Error)(nil)
	_ connection.ThrottledError  = (*Error)(nil)
)

// ThrottleScope is what this answer pauses: AADSTS50196 (loop detected for
// one user and app) the connection, an HTTP 429 the instance's refreshes.
// A call that was not sent because of a pause starts no new one.
func (e *Error) ThrottleScope() connection.ThrottleScope {
	switch {
	case e.HTTPStatus == 0:
		return connection.ThrottleNone
	case e.HasErrorCode(aadstsLoopDetected):
		return connection.ThrottleConnection
	case e.HTTPStatus == http.StatusTooManyRequests:
		return connection.ThrottleInstance
	}
	return connection.ThrottleNone
}

// Error names the call, the code, the AADSTS numbers and the trace ID:
// enough to search Microsoft's docs and logs, nothing personal.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("msidentity: ")
	if e.Op != "" {
		b.WriteString(e.Op)
		b.WriteString(": ")
	}
	b.WriteString(e.ErrorCode())
	if len(e.ErrorCodes) > 0 {
		b.WriteString(" (")
		for i, c := range e.ErrorCodes {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("AADSTS")
			b.WriteString(strconv.Itoa(c))
		}
		b.WriteString(")")
	}
	if e.HTTPStatus != 0 {
		fmt.Fprintf(&b, ", http %d", e.HTTPStatus)
	}
	if e.TraceID != "" {
		b.WriteString(", trace_id ")
		b.WriteString(e.TraceID)
	}
	if e.Delay > 0 {
		fmt.Fprintf(&b, ", retry after %s", e.Delay)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying network or parse error, if any, so
// errors.Is(err, context.DeadlineExceeded) works.
func (e *Error) Unwrap() error { return e.Err }

// ErrorCode is the stable code for logs and last_error.
func (e *Error) ErrorCode() string {
	if e.Code != "" {
		return e.Code
	}
	if e.Err != nil {
		return CodeNetworkError
	}
	return CodeInvalidResponse
}

// ErrorClass applies the classification table of facts/microsoft-identity.md.
func (e *Error) ErrorClass() connection.Class {
	return classify(e.HTTPStatus, e.ErrorCode(), e.ErrorCodes)
}

// RetryAfter is the pause Microsoft asked for; 0 when none.
func (e *Error) RetryAfter() time.Duration { return e.Delay }

// HasErrorCode reports whether Microsoft listed AADSTS code n.
func (e *Error) HasErrorCode(n int) bool {
	for _, c := range e.ErrorCodes {
		if c == n {
			return true
		}
	}
	return false
}

// MarshalZerologObject writes the fields the contract allows in logs: op,
// code, http_status, error_codes, trace_id, correlation_id, suberror (never
// the description). Class and retry_after_s are left to the caller, which
// logs them under the contract's names once.
func (e *Error) MarshalZerologObject(ev *zerolog.Event) {
	ev.Str("op", e.Op).Str("code", e.ErrorCode())
	if e.HTTPStatus != 0 {
		ev.Int("http_status", e.HTTPStatus)
	}
	if len(e.ErrorCodes) > 0 {
		ev.Ints("error_codes", e.ErrorCodes)
	}
	if e.TraceID != "" {
		ev.Str("trace_id", e.TraceID)
	}
	if e.CorrelationID != "" {
		ev.Str("correlation_id", e.CorrelationID)
	}
	if e.Suberror != "" {
		ev.Str("suberror", e.Suberror)
	}
}

// AADSTS codes this package acts on itself.
const (
	// aadstsLoopDetected (50196) comes as invalid_grant but is throttling:
	// the client repeated the same request too often.
	aadstsLoopDetected = 50196
)

// The classification table (facts/microsoft-identity.md), keyed by AADSTS
// number. Microsoft's `error` decides first; a listed number refines it.
var codeClass = map[int]connection.Class{
	// reconnect required: the grant is gone, only the user can fix it.
	700082:  connection.ClassReconnectRequired, // refresh token expired (inactivity)
	70008:   connection.ClassReconnectRequired, // expired or revoked
	50173:   connection.ClassReconnectRequired, // grant revoked (password change)
	70000:   connection.ClassReconnectRequired, // invalid grant
	50089:   connection.ClassReconnectRequired, // flow token expired
	50132:   connection.ClassReconnectRequired, // session revoked
	50133:   connection.ClassReconnectRequired, // session invalid (password change)
	50057:   connection.ClassReconnectRequired, // user disabled
	50034:   connection.ClassReconnectRequired, // user does not exist
	50020:   connection.ClassReconnectRequired, // user not in tenant
	65001:   connection.ClassReconnectRequired, // consent revoked
	9002313: connection.ClassReconnectRequired, // malformed or invalid grant
	50076:   connection.ClassReconnectRequired, // MFA required
	50079:   connection.ClassReconnectRequired, // MFA registration required
	50078:   connection.ClassReconnectRequired, // MFA expired
	70043:   connection.ClassReconnectRequired, // sign-in frequency (CA)
	53003:   connection.ClassReconnectRequired, // blocked by conditional access
	530032:  connection.ClassReconnectRequired, // blocked by security defaults / CA

	// configuration: our registration or credential is wrong.
	7000215: connection.ClassConfiguration, // invalid client secret
	7000222: connection.ClassConfiguration, // client secret expired
	7000218: connection.ClassConfiguration, // no client credential sent
	700027:  connection.ClassConfiguration, // client assertion failed validation
	700016:  connection.ClassConfiguration, // application not found in tenant
	70001:   connection.ClassConfiguration, // application disabled
	7000112: connection.ClassConfiguration, // application disabled
	50194:   connection.ClassConfiguration, // app not multi-tenant
	9002332: connection.ClassConfiguration, // app registered for another audience
	700005:  connection.ClassConfiguration, // code issued for another tenant/app
	90009:   connection.ClassConfiguration, // token for itself / no scope
	70011:   connection.ClassConfiguration, // invalid scope
	28002:   connection.ClassConfiguration, // invalid scope
	650056:  connection.ClassConfiguration, // permissions not configured
	650057:  connection.ClassConfiguration, // permissions not configured
	65005:   connection.ClassConfiguration, // permissions missing
	501481:  connection.ClassConfiguration, // PKCE verifier does not match
	54005:   connection.ClassConfiguration, // code already redeemed

	// transient: retry later.
	aadstsLoopDetected: connection.ClassTransient, // loop detected = throttling
	90024:              connection.ClassTransient,
	50033:              connection.ClassTransient,
	90006:              connection.ClassTransient,
	90033:              connection.ClassTransient,
	90090:              connection.ClassTransient,
	70012:              connection.ClassTransient,
}

// errorClass maps Microsoft's `error` (and this package's codes).
var errorClass = map[string]connection.Class{
	"invalid_grant":        connection.ClassReconnectRequired,
	"interaction_required": connection.ClassReconnectRequired,
	"consent_required":     connection.ClassReconnectRequired,

	"invalid_client":            connection.ClassConfiguration,
	"unauthorized_client":       connection.ClassConfiguration,
	"invalid_request":           connection.ClassConfiguration,
	"invalid_scope":             connection.ClassConfiguration,
	"unsupported_grant_type":    connection.ClassConfiguration,
	"unsupported_response_type": connection.ClassConfiguration,

	"temporarily_unavailable": connection.ClassTransient,
	"server_error":            connection.ClassTransient,
	CodeThrottled:             connection.ClassTransient,
	CodeNetworkError:          connection.ClassTransient,
}

// classify decides what a failure means for the service. It errs towards
// the classes that never disconnect a user: a 5xx/429 or any listed
// transient number is transient whatever the `error` says, and
// reconnect_required needs both an `error` that means "the grant is gone"
// and no number saying otherwise.
func classify(status int, code string, codes []int) connection.Class {
	if status == http.StatusTooManyRequests || status >= 500 {
		return connection.ClassTransient
	}
	listed, found := connection.ClassTransient, false
	for _, n := range codes {
		c, ok := codeClass[n]
		if !ok {
			continue
		}
		if !found || rank(c) > rank(listed) {
			listed, found = c, true
		}
	}
	byError, known := errorClass[code]
	switch {
	case found && listed != connection.ClassReconnectRequired:
		return listed
	case known:
		// A listed reconnect number only confirms a reconnect `error`; it
		// cannot turn invalid_client or invalid_request into "blame the user".
		return byError
	case found:
		return listed
	case status >= 400:
		// Microsoft's JSON with an unknown `error`, or an error page from
		// something else (a wrong MICROSOFT_AUTHORITY_HOST answers 404):
		// our request or setup is wrong, and no user is to blame.
		return connection.ClassConfiguration
	default:
		// No answer, or an unusable 2xx: try again later.
		return connection.ClassTransient
	}
}

// rank orders classes by how safe they are for the user when codes disagree.
func rank(c connection.Class) int {
	switch c {
	case connection.ClassTransient:
		return 2
	case connection.ClassConfiguration:
		return 1
	default:
		return 0
	}
}

// errorBody is Microsoft's error JSON: the identity platform's flat shape or
// Graph's nested {"error": {"code", "message", "innerError"}}.
type errorBody struct {
	Error         string
	Description   string
	ErrorCodes    []int
	Timestamp     string
	TraceID       string
	CorrelationID string
	Suberror      string
}

// parseErrorBody reads either error shape; ok is false when body is not
// one (an HTML error page, truncated JSON, a JSON without `error`).
func parseErrorBody(body []byte) (errorBody, bool) {
	var raw struct {
		Error         json.RawMessage `json:"error"`
		Description   string          `json:"error_description"`
		ErrorCodes    []json.Number   `json:"error_codes"`
		Timestamp     string          `json:"timestamp"`
		TraceID       string          `json:"trace_id"`
		CorrelationID string          `json:"correlation_id"`
		Suberror      string          `json:"suberror"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		// Some fields may have unexpected types; retry leniently so one odd
		// field does not hide the `error` code.
		var lenient struct {
			Error json.RawMessage `json:"error"`
		}
		if json.Unmarshal(body, &lenient) != nil {
			return errorBody{}, false
		}
		raw.Error = lenient.Error
	}
	eb := errorBody{
		Description:   raw.Description,
		Timestamp:     raw.Timestamp,
		TraceID:       raw.TraceID,
		CorrelationID: raw.CorrelationID,
		Suberror:      raw.Suberror,
	}
	for _, n := range raw.ErrorCodes {
		if i, err := strconv.Atoi(n.String()); err == nil {
			eb.ErrorCodes = append(eb.ErrorCodes, i)
		}
	}
	e := bytes.TrimSpace(raw.Error)
	switch {
	case len(e) == 0:
		return errorBody{}, false
	case e[0] == '"':
		if err := json.Unmarshal(e, &eb.Error); err != nil {
			return errorBody{}, false
		}
	case e[0] == '{':
		var g struct {
			Code       string `json:"code"`
			Message    string `json:"message"`
			InnerError struct {
				Date            string `json:"date"`
				RequestID       string `json:"request-id"`
				ClientRequestID string `json:"client-request-id"`
			} `json:"innerError"`
		}
		if err := json.Unmarshal(e, &g); err != nil {
			return errorBody{}, false
		}
		eb.Error, eb.Description = g.Code, g.Message
		eb.TraceID, eb.CorrelationID, eb.Timestamp = g.InnerError.RequestID, g.InnerError.ClientRequestID, g.InnerError.Date
	default:
		return errorBody{}, false
	}
	if eb.Error == "" {
		return errorBody{}, false
	}
	// Codes are stable identifiers; anything longer or odder is not one of
	// Microsoft's and would only pollute logs.
	if len(eb.Error) > 128 {
		eb.Error = eb.Error[:128]
	}
	return eb, true
}

// responseError builds the *Error for a failed HTTP answer.
func responseError(op string, status int, h http.Header, body []byte, now time.Time) *Error {
	e := &Error{Op: op, HTTPStatus: status}
	if eb, ok := parseErrorBody(body); ok {
		e.Code, e.Description, e.ErrorCodes = eb.Error, eb.Description, eb.ErrorCodes
		e.Timestamp, e.TraceID, e.CorrelationID, e.Suberror = eb.Timestamp, eb.TraceID, eb.CorrelationID, eb.Suberror
	} else if status == http.StatusTooManyRequests {
		e.Code = CodeThrottled
	} else {
		e.Code = CodeInvalidResponse
	}
	if e.TraceID == "" {
		// Graph and some gateway answers carry the IDs only as headers.
		e.TraceID = h.Get("x-ms-request-id")
		if e.TraceID == "" {
			e.TraceID = h.Get("request-id")
		}
	}
	if e.CorrelationID == "" {
		e.CorrelationID = h.Get("client-request-id")
	}
	if d, ok := parseRetryAfter(h.Get("Retry-After"), now); ok {
		e.Delay, e.retryAfterSent = d, true
	}
	return e
}

// maxRetryAfter caps a server's Retry-After: a garbage or hostile header
// must not silence every refresh of the instance for days.
const maxRetryAfter = time.Hour

// parseRetryAfter reads RFC 9110's Retry-After: delay-seconds or an
// HTTP-date (relative to now). A date in the past means "now" (0, true).
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if strings.Trim(v, "0123456789") == "" {
		// delay-seconds; too many digits for uint64 is still "a long time".
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n > uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now)
	switch {
	case d < 0:
		return 0, true
	case d > maxRetryAfter:
		return maxRetryAfter, true
	}
	return d, true
}

// IDTokenError: the code exchange succeeded but its id_token is missing,
// malformed, or not for this app and authority. Nothing is stored from such
// an answer. It is a configuration error: the client ID, the authority host
// or the scopes (openid) are wrong, or something answers in Microsoft's
// place.
type IDTokenError struct {
	// Reason says what was wrong; it never contains the token.
	Reason string
}

// Error says what was wrong with the id_token, never its content.
func (e *IDTokenError) Error() string { return "msidentity: exchange: id_token: " + e.Reason }

// ErrorClass is configuration: no user can fix it by signing in again.
func (e *IDTokenError) ErrorClass() connection.Class { return connection.ClassConfiguration }

// ErrorCode is "invalid_id_token".
func (e *IDTokenError) ErrorCode() string { return "invalid_id_token" }

var _ connection.ClassifiedError = (*IDTokenError)(nil)
