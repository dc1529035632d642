package connection

import (
	"errors"
	"fmt"
	"time"
)

// Error codes: the contract's stable error codes (contract "Errors"), plus
// the two refusals of the browser routes, which answer a page, not JSON.
// The HTTP API maps each code to its status in exactly one table
// (httpapi/errors.go); a code it does not know is a 500 internal_error.
const (
	EInvalid             = "invalid_request"
	EReturnURLNotAllowed = "return_url_not_allowed"
	EConnectCodeInvalid  = "invalid_connect_code"
	EUserMismatch        = "user_mismatch"
	ENotConnected        = "not_connected"
	EReconnectRequired   = "reconnect_required"
	EUnavailable         = "temporarily_unavailable"
	ENotConfigured       = "not_configured"
	EUnauthorized        = "unauthorized"
	ENotFound            = "not_found"
	EMethodNotAllowed    = "method_not_allowed"
	EInternal            = "internal_error"
	// EConflict: a conditional write lost. Services re-read and decide
	// again; one that reaches the API is an internal error.
	EConflict = "conflict"
	// ELinkInvalid and EStateInvalid: the browser routes' connect link or
	// callback state is unknown, used, expired or not this browser's.
	ELinkInvalid  = "invalid_link"
	EStateInvalid = "invalid_state"
)

// Error is the domain's one error type: a stable Code callers branch on
// (with ErrorCode, never by matching text) and a Message safe to show the
// CMS. Services return it, or wrap it with %w and their own context.
type Error struct {
	Code    string
	Message string
	// RetryAfter, when set, is how long the caller should wait before
	// trying again (temporarily_unavailable, not_configured).
	RetryAfter time.Duration
	// Err is the cause, for the log; never shown to the CMS.
	Err error
}

// Error is the message and, when there is one, the cause.
func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

// Unwrap exposes the cause to errors.Is and errors.As.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain; EInternal
// when there is none, "" for a nil err.
func ErrorCode(err error) string {
	code, _ := codeAndMessage(err)
	return code
}

// ErrorMessage returns the message of the first *Error in err's chain; a
// detail-free "internal error" when there is none (the detail belongs to
// the log), "" for a nil err.
func ErrorMessage(err error) string {
	_, msg := codeAndMessage(err)
	return msg
}

func codeAndMessage(err error) (code, msg string) {
	var e *Error
	switch {
	case err == nil:
		return "", ""
	case errors.As(err, &e):
		return e.Code, e.Message
	}
	return EInternal, "internal error"
}

// Sentinel errors shared by stores and services. Callers test them with
// errors.Is; adapters wrap them with %w and their own context.
var (
	// ErrNotFound: no such connection (or pending session). The one "not
	// connected": stores and services return it alike.
	ErrNotFound = &Error{Code: ENotConnected, Message: "this user has no Microsoft connection"}
	// ErrConflict: a conditional write lost (ETag mismatch, or the row
	// already exists). The caller re-reads and decides again.
	ErrConflict = &Error{Code: EConflict, Message: "conflict"}
	// ErrReconnectRequired: Microsoft no longer accepts the connection's
	// refresh token (status reconnect_required).
	ErrReconnectRequired = &Error{Code: EReconnectRequired, Message: "Microsoft no longer accepts this connection: the user must connect again"}
	// ErrBadCursor: a list cursor this service did not issue (or issued
	// for another query).
	ErrBadCursor = &Error{Code: EInvalid, Message: "cursor was not issued by this service for this query"}
	// ErrInvalidUserID: the user_id breaks the contract's rule
	// (ValidUserID). No such connection can exist, so routes answer 400
	// invalid_request and stores refuse it before any I/O.
	ErrInvalidUserID = &Error{Code: EInvalid, Message: "user_id must be 1-256 characters of A-Z a-z 0-9 - . _ ~ @, and not . or .."}
)

// Class is what a failure of Microsoft's means for the service, per the
// table in facts/microsoft-identity.md.
type Class int

const (
	// ClassTransient: keep the status, retry later with backoff.
	ClassTransient Class = iota
	// ClassReconnectRequired: Microsoft refused the grant for good; mark
	// the connection reconnect_required and stop refreshing it.
	ClassReconnectRequired
	// ClassConfiguration: our app registration or secret is wrong. Never
	// blame the user; keep every status; log at error level.
	ClassConfiguration
)

// String is the stable name used in logs (`class` field) and docs.
func (c Class) String() string {
	switch c {
	case ClassReconnectRequired:
		return "reconnect_required"
	case ClassConfiguration:
		return "configuration"
	default:
		return "transient"
	}
}

// ClassifiedError is implemented by adapter errors that know their class
// (msidentity's protocol error does). Anything else is transient: a network
// error or timeout must never disconnect a user.
type ClassifiedError interface {
	error
	ErrorClass() Class
	// ErrorCode is the stable code for logs and last_error, for example
	// "invalid_grant".
	ErrorCode() string
}

// ClassOf returns the class of err, transient when unknown.
func ClassOf(err error) Class {
	var ce ClassifiedError
	if errors.As(err, &ce) {
		return ce.ErrorClass()
	}
	return ClassTransient
}

// CodeOf returns the stable error code of err, or fallback.
func CodeOf(err error, fallback string) string {
	var ce ClassifiedError
	if errors.As(err, &ce) && ce.ErrorCode() != "" {
		return ce.ErrorCode()
	}
	return fallback
}

// RetryAfterError is implemented by errors that carry a server-requested
// pause (HTTP 429 Retry-After, AADSTS50196 throttling).
type RetryAfterError interface {
	error
	RetryAfter() time.Duration
}

// RetryAfterOf returns the pause err asks for, if any.
func RetryAfterOf(err error) (time.Duration, bool) {
	var re RetryAfterError
	if errors.As(err, &re) && re.RetryAfter() > 0 {
		return re.RetryAfter(), true
	}
	return 0, false
}

// ErrPaused: a refresh was not sent because a throttling pause covers it
// (this connection's or this instance's). Errors wrapping it carry the
// remaining pause as their RetryAfter.
var ErrPaused = errors.New("refresh paused while Microsoft throttles")

// ThrottleScope is what a throttling answer from Microsoft pauses
// (contract "Throttling").
type ThrottleScope int

const (
	// ThrottleNone: not a throttling answer.
	ThrottleNone ThrottleScope = iota
	// ThrottleConnection: AADSTS50196, Microsoft's loop detection for one
	// user and app: pause that one connection's refreshes.
	ThrottleConnection
	// ThrottleInstance: HTTP 429 throttles the app: pause this instance's
	// refreshes (timer and token API), never a person's code exchange.
	ThrottleInstance
)

// ThrottledError is implemented by adapter errors that know whether they
// are throttling and what they pause (msidentity's protocol error does).
type ThrottledError interface {
	error
	ThrottleScope() ThrottleScope
}

// ThrottleScopeOf returns what err asks to pause; ThrottleNone when unknown.
func ThrottleScopeOf(err error) ThrottleScope {
	var te ThrottledError
	if errors.As(err, &te) {
		return te.ThrottleScope()
	}
	return ThrottleNone
}
