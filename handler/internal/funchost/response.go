package funchost

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/rs/zerolog"
)

// InvocationResponse is the answer to a non-HTTP invocation. The host reads
// Logs into the run's log (as information) and ReturnValue as the function's
// $return; Outputs holds output bindings by name (none here). It is encoded
// with Outputs always an object and Logs always an array, never null.
type InvocationResponse struct {
	Outputs     map[string]any
	Logs        []string
	ReturnValue any
}

// MarshalJSON writes {"Outputs":{...},"Logs":[...],"ReturnValue":...}.
func (r InvocationResponse) MarshalJSON() ([]byte, error) {
	type plain InvocationResponse // without this method
	p := plain(r)
	if p.Outputs == nil {
		p.Outputs = map[string]any{}
	}
	if p.Logs == nil {
		p.Logs = []string{}
	}
	b, err := encode(p)
	return bytes.TrimSuffix(b, []byte("\n")), err
}

// errorResponse is a failed invocation's body. The host discards the body
// of a non-2xx answer (it fails the invocation on the status alone), so this
// is for people and tests: the contract's {"error","message"} plus the
// protocol's keys, so either reader finds what it looks for. It is not
// built by embedding InvocationResponse, whose MarshalJSON would be
// promoted and drop the error keys.
type errorResponse struct {
	Error       string         `json:"error"`
	Message     string         `json:"message"`
	Outputs     map[string]any `json:"Outputs"`
	Logs        []string       `json:"Logs"`
	ReturnValue any            `json:"ReturnValue"`
}

// writeResponse answers an invocation with 200 and resp. Should resp not
// encode (a ReturnValue JSON cannot represent), it answers 500 instead, so
// the run is recorded as failed rather than silently empty, and returns
// the encoding error for the caller to log.
func writeResponse(w http.ResponseWriter, resp InvocationResponse) error {
	body, err := encode(resp)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal_error", "the invocation's result could not be encoded", resp.Logs)
		return fmt.Errorf("funchost: encode response: %w", err)
	}
	writeBody(w, http.StatusOK, body)
	return nil
}

func writeError(w http.ResponseWriter, status int, code, message string, logs []string) {
	if logs == nil {
		logs = []string{}
	}
	body, err := encode(errorResponse{Error: code, Message: message, Outputs: map[string]any{}, Logs: logs})
	if err != nil { // only strings and empty values: cannot fail
		body = []byte(`{"error":"internal_error","message":"internal error","Outputs":{},"Logs":[],"ReturnValue":null}` + "\n")
	}
	writeBody(w, status, body)
}

func writeBody(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// encode writes v as one line of JSON without HTML escaping: logs quote
// user ids and URLs, which should read as they are.
func encode(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// TimerFunc runs one timer invocation. Its returnValue becomes ReturnValue
// and its logs the response's Logs. A non-nil error fails the invocation
// (500); the function should log the failure itself on stdout, because the
// host does not read the body of a failed invocation.
type TimerFunc func(ctx context.Context, inv Invocation, t TimerInfo) (returnValue any, logs []string, err error)

// TimerHandler serves a timer function's route (POST /<FunctionName>): it
// decodes the invocation for the input binding named binding, calls fn, and
// answers 200 with {"Outputs":{},"Logs":[...],"ReturnValue":...}; 500 when
// fn fails; 400 when the body is not such an invocation (the contract's
// invalid_request); 405 for any method but POST.
//
// fn's context is the request's, carrying a zerolog logger (from
// zerolog.Ctx of the request context, if the server put one there) with
// invocation_id and function fields, so everything fn logs names its run.
// Warnings from decoding are logged and put first in Logs.
func TimerHandler(binding string, fn TimerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serveInvocation(w, r, binding, DecodeTimer, nil, fn)
	})
}

// serveInvocation is every trigger's invocation path (TimerHandler,
// QueueHandler): POST only; decode the binding's input T; a logger with
// invocation_id and function (and what fields adds for T) in fn's context;
// decoding warnings logged and put first in Logs; 400 invalid_request for
// a body that is not an invocation; 500 internal_error when fn fails (its
// detail only in the log); else 200 with fn's ReturnValue.
func serveInvocation[T any](w http.ResponseWriter, r *http.Request, binding string,
	decode func(io.Reader, string) (T, Invocation, error),
	fields func(zerolog.Context, T) zerolog.Context,
	fn func(context.Context, Invocation, T) (any, []string, error)) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "the host invokes functions with POST", nil)
		return
	}
	in, inv, err := decode(r.Body, binding)
	inv.ID = r.Header.Get(InvocationIDHeader)
	lc := zerolog.Ctx(r.Context()).With().Str("invocation_id", inv.ID).Str("function", inv.FunctionName)
	if fields != nil {
		lc = fields(lc, in)
	}
	log := lc.Logger()
	if err != nil {
		log.Warn().Err(err).Str("event", "invocation_invalid").Msg("invocation_invalid")
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error(), nil)
		return
	}
	for _, warning := range inv.Warnings {
		log.Warn().Str("warning", warning).Str("event", "invocation_warning").Msg("invocation_warning")
	}
	rv, logs, err := fn(log.WithContext(r.Context()), inv, in)
	all := make([]string, 0, len(inv.Warnings)+len(logs))
	all = append(append(all, inv.Warnings...), logs...)
	if err != nil {
		log.Error().Err(err).Str("event", "invocation_failed").Msg("invocation_failed")
		// The error's detail goes to the log above, not to the body
		// (the contract's internal_error leaks nothing).
		writeError(w, http.StatusInternalServerError, "internal_error", "the invocation failed", all)
		return
	}
	if err := writeResponse(w, InvocationResponse{Logs: all, ReturnValue: rv}); err != nil {
		log.Error().Err(err).Str("event", "invocation_failed").Msg("invocation_failed")
	}
}
