package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// statusOf is the one table from the domain's error codes to HTTP statuses
// (contract "Errors"). A code not in it (connection.EConflict, say) is an
// internal error: 500 internal_error, no detail in the response, the detail
// in the log.
var statusOf = map[string]int{
	connection.EInvalid:             http.StatusBadRequest,
	connection.EReturnURLNotAllowed: http.StatusBadRequest,
	connection.EConnectCodeInvalid:  http.StatusBadRequest,
	connection.ELinkInvalid:         http.StatusBadRequest, // a page, not JSON
	connection.EStateInvalid:        http.StatusBadRequest, // a page, not JSON
	connection.EUnauthorized:        http.StatusUnauthorized,
	connection.ENotConnected:        http.StatusNotFound,
	connection.ENotFound:            http.StatusNotFound,
	connection.EMethodNotAllowed:    http.StatusMethodNotAllowed,
	connection.EUserMismatch:        http.StatusConflict,
	connection.EReconnectRequired:   http.StatusConflict,
	connection.EUnavailable:         http.StatusServiceUnavailable,
	connection.ENotConfigured:       http.StatusServiceUnavailable,
	connection.EInternal:            http.StatusInternalServerError,
}

// errorBody is the contract's error JSON.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError is the one place where errors become statuses and the
// contract's error JSON (see respond). It logs what the response must not
// say: an internal error's detail, and which secret or credential a
// not_configured at run time is about.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	switch code, _ := errorStatus(err); {
	case code == connection.EInternal:
		s.Log.Error().Str("event", "internal_error").Str("route", r.Pattern).Err(err).Msg("request failed")
	case code == connection.ENotConfigured && hasCause(err):
		s.Log.Error().Str("event", "not_configured").Err(err).Msg("a required secret or credential is missing or malformed")
	}
	respond(w, err)
}

// respond writes err as the contract's error JSON: the status from its code
// (statusOf), its message, and Retry-After when it asks for a pause. An
// error without a code is 500 internal_error with no detail. It logs
// nothing: writeError does, for handlers.
func respond(w http.ResponseWriter, err error) {
	code, status := errorStatus(err)
	msg := connection.ErrorMessage(err)
	if code == connection.EInternal {
		msg = "internal error" // the detail is for the log
	}
	var e *connection.Error
	if errors.As(err, &e) && e.RetryAfter > 0 {
		w.Header().Set("Retry-After", retryAfter(e.RetryAfter))
	}
	writeJSON(w, status, errorBody{Error: code, Message: msg})
}

// hasCause reports an error that is more than a bare *connection.Error:
// one wrapped by an adapter, or carrying the failure that caused it.
func hasCause(err error) bool {
	var e *connection.Error
	return !errors.As(err, &e) || error(e) != err || e.Err != nil
}

// errorStatus returns err's code and its status; internal_error (500) for a
// code statusOf does not know.
func errorStatus(err error) (string, int) {
	code := connection.ErrorCode(err)
	if status, ok := statusOf[code]; ok {
		return code, status
	}
	return connection.EInternal, statusOf[connection.EInternal]
}

// bodyError words a failure to read a request body as invalid_request.
func bodyError(err error) error {
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		return &connection.Error{Code: connection.EInvalid, Message: "the body is over 64 KiB", Err: err}
	}
	return &connection.Error{Code: connection.EInvalid, Message: "could not read the body", Err: err}
}

// retryAfter rounds up to whole seconds, at least 1.
func retryAfter(d time.Duration) string {
	secs := int64((d + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	return strconv.FormatInt(secs, 10)
}
