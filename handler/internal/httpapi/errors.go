package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/megdocs/msconnector/handler/internal/connectflow"
	"github.com/megdocs/msconnector/handler/internal/secrets"
	"github.com/megdocs/msconnector/handler/internal/tokens"
)

// errorBody is the contract's error JSON.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

func writeJSONError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, errorBody{Error: code, Message: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError is the one place where domain errors become statuses. Unknown
// errors are 500 with no detail; the detail goes to the log.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var (
		input   *connectflow.InputError
		unavail *tokens.UnavailableError
		cfg     *tokens.ConfigurationError
		maxErr  *http.MaxBytesError
	)
	switch {
	case errors.As(err, &input):
		writeJSONError(w, http.StatusBadRequest, input.Code, input.Message)
	case errors.Is(err, connectflow.ErrConnectCodeInvalid):
		writeJSONError(w, http.StatusBadRequest, "invalid_connect_code", "the connect code is unknown, already used or expired: start connecting again")
	case errors.Is(err, connectflow.ErrUserMismatch):
		writeJSONError(w, http.StatusConflict, "user_mismatch", "this sign-in was started for another user; nothing was connected")
	case errors.As(err, &maxErr):
		writeJSONError(w, http.StatusBadRequest, "invalid_request", "the body is over 64 KiB")
	case errors.Is(err, tokens.ErrNotConnected):
		writeJSONError(w, http.StatusNotFound, "not_connected", "this user has no Microsoft connection")
	case errors.Is(err, tokens.ErrReconnectRequired):
		writeJSONError(w, http.StatusConflict, "reconnect_required", "Microsoft no longer accepts this connection: the user must connect again")
	case errors.As(err, &unavail):
		w.Header().Set("Retry-After", retryAfter(unavail.RetryAfter))
		writeJSONError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the access token cannot be refreshed right now; retry later")
	case errors.As(err, &cfg):
		w.Header().Set("Retry-After", "60")
		writeJSONError(w, http.StatusServiceUnavailable, "not_configured", "Microsoft rejected the connector's app credentials; an administrator must fix the configuration (see the log)")
	case errors.Is(err, secrets.ErrNotConfigured):
		s.Log.Error().Str("event", "not_configured").Err(err).Msg("a required secret is missing or malformed")
		writeJSONError(w, http.StatusServiceUnavailable, "not_configured", "a required secret is missing or malformed: see the log")
	default:
		s.Log.Error().Str("event", "internal_error").Str("route", r.Pattern).Err(err).Msg("request failed")
		writeJSONError(w, http.StatusInternalServerError, "internal_error", "internal error")
	}
}

// retryAfter rounds up to whole seconds, at least 1.
func retryAfter(d time.Duration) string {
	secs := int64((d + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	return strconv.FormatInt(secs, 10)
}
