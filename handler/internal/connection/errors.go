package connection

import (
	"errors"
	"time"
)

// Sentinel errors shared by stores and services. Callers test them with
// errors.Is; adapters wrap them with %w and their own context.
var (
	// ErrNotFound: no such connection (or pending session).
	ErrNotFound = errors.New("not found")
	// ErrConflict: a conditional write lost (ETag mismatch, or the row
	// already exists). The caller re-reads and decides again.
	ErrConflict = errors.New("conflict")
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
