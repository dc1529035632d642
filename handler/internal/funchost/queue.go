package funchost

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// QueueMessage is a queue trigger's input: the message text and the
// trigger's binding data from Metadata. It does not interpret the text:
// any queue-triggered function (webhook deliveries today, refresh work
// later) decodes its own Body.
type QueueMessage struct {
	// Body is the message text as it was enqueued (after the host's base64
	// decoding, and after undoing the host's JSON-string wrapping).
	Body []byte
	// ID and PopReceipt identify this receive of the message.
	ID, PopReceipt string
	// DequeueCount counts receives, this one included (1 the first time).
	DequeueCount    int64
	InsertionTime   time.Time
	ExpirationTime  time.Time
	NextVisibleTime time.Time
}

// DecodeQueue reads a queue-trigger invocation body (at most MaxBodyBytes)
// and returns the message of the input binding named binding. Every error
// wraps ErrInvalidInvocation.
//
// The host serialises the message (a string) with Newtonsoft before putting
// it in Data, so message {"a":1} arrives as the JSON string "\"{\"a\":1}\""
// wrapped once more: Data.message is a JSON string whose value is itself a
// JSON string literal. Microsoft's custom-handler page shows the value
// unwrapped; both forms, and a raw JSON object, are accepted. Metadata's
// own values are Newtonsoft-serialised too: Id and PopReceipt carry
// embedded quotes, DequeueCount is a string.
func DecodeQueue(r io.Reader, binding string) (QueueMessage, Invocation, error) {
	fail := func(format string, args ...any) (QueueMessage, Invocation, error) {
		return QueueMessage{}, Invocation{}, fmt.Errorf("funchost: decode queue message: %w: "+format, append([]any{ErrInvalidInvocation}, args...)...)
	}
	body, err := io.ReadAll(io.LimitReader(r, MaxBodyBytes+1))
	if err != nil {
		return fail("read body: %w", err)
	}
	if len(body) > MaxBodyBytes {
		return QueueMessage{}, Invocation{}, fmt.Errorf("funchost: decode queue message: %w", ErrBodyTooLarge)
	}
	var req InvocationRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return fail("%w", err)
	}
	raw, ok := lookup(req.Data, binding)
	if !ok {
		return fail("no binding %q in Data", binding)
	}
	msg, ok := messageText(raw)
	if !ok {
		return fail("Data.%s is not a queue message: %s", binding, clip(raw))
	}
	inv := Invocation{Metadata: req.Metadata}
	inv.readSys()
	m := QueueMessage{Body: msg}
	m.ID = metaString(inv.Metadata, "Id", &inv.Warnings)
	m.PopReceipt = metaString(inv.Metadata, "PopReceipt", &inv.Warnings)
	m.DequeueCount = metaInt(inv.Metadata, "DequeueCount", &inv.Warnings)
	m.InsertionTime = metaTime(inv.Metadata, "InsertionTime", &inv.Warnings)
	m.ExpirationTime = metaTime(inv.Metadata, "ExpirationTime", &inv.Warnings)
	m.NextVisibleTime = metaTime(inv.Metadata, "NextVisibleTime", &inv.Warnings)
	return m, inv, nil
}

// messageText undoes the host's wrapping: a JSON string is unwrapped, and
// unwrapped once more when its value is itself a JSON string literal; a
// JSON object or array is the message as it is.
func messageText(raw json.RawMessage) ([]byte, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || isNull(raw) {
		return nil, false
	}
	switch raw[0] {
	case '{', '[':
		return raw, true
	case '"':
	default:
		return nil, false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, false
	}
	if strings.HasPrefix(s, `"`) {
		var inner string
		if err := json.Unmarshal([]byte(s), &inner); err == nil {
			return []byte(inner), true
		}
	}
	return []byte(s), true
}

// unquote reads a Metadata string: Newtonsoft serialised it once more, so
// "\"abc\"" is abc; a plain "abc" is accepted too.
func unquote(raw json.RawMessage) (string, bool) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	if strings.HasPrefix(s, `"`) {
		var inner string
		if err := json.Unmarshal([]byte(s), &inner); err == nil {
			return inner, true
		}
	}
	return s, true
}

func metaString(md map[string]json.RawMessage, key string, warnings *[]string) string {
	raw, ok := lookup(md, key)
	if !ok || isNull(raw) {
		return ""
	}
	s, ok := unquote(raw)
	if !ok {
		*warnings = append(*warnings, fmt.Sprintf("funchost: Metadata.%s is not a string: %s", key, clip(raw)))
	}
	return s
}

// metaInt accepts "3" (what the host sends), "\"3\"" and 3.
func metaInt(md map[string]json.RawMessage, key string, warnings *[]string) int64 {
	raw, ok := lookup(md, key)
	if !ok || isNull(raw) {
		return 0
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err == nil {
		return n
	}
	if s, ok := unquote(raw); ok {
		if n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
			return n
		}
	}
	*warnings = append(*warnings, fmt.Sprintf("funchost: Metadata.%s is not a number: %s", key, clip(raw)))
	return 0
}

func metaTime(md map[string]json.RawMessage, key string, warnings *[]string) time.Time {
	raw, ok := lookup(md, key)
	if !ok || isNull(raw) {
		return time.Time{}
	}
	if s, ok := unquote(raw); ok {
		if t, ok := ParseHostTime(s); ok {
			return t
		}
	}
	*warnings = append(*warnings, fmt.Sprintf("funchost: Metadata.%s is not a recognised time: %s", key, clip(raw)))
	return time.Time{}
}

// QueueFunc handles one queue message. A nil error answers 200 and the host
// deletes the message; an error answers 500 and the host makes the message
// visible again after host.json's visibilityTimeout, moving it to
// "<queue>-poison" after maxDequeueCount receives. So return an error only
// when the message must come back; a function that schedules its own retry
// (a new message with a delay) returns nil.
type QueueFunc func(ctx context.Context, inv Invocation, m QueueMessage) (logs []string, err error)

// QueueHandler serves a queue-triggered function's route (POST
// /<FunctionName>): it decodes the message of the input binding named
// binding, calls fn and answers {"Outputs":{},"Logs":[...],"ReturnValue":null}
// with Content-Type application/json (the host fails an invocation answered
// in text/plain). 400 when the body is not such an invocation, 405 for any
// method but POST. fn's context carries a logger with invocation_id,
// function and message_id.
func QueueHandler(binding string, fn QueueFunc) http.Handler {
	fields := func(c zerolog.Context, m QueueMessage) zerolog.Context {
		return c.Str("message_id", m.ID).Int64("dequeue_count", m.DequeueCount)
	}
	call := func(ctx context.Context, inv Invocation, m QueueMessage) (any, []string, error) {
		logs, err := fn(ctx, inv, m)
		return nil, logs, err
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serveInvocation(w, r, binding, DecodeQueue, fields, call)
	})
}
