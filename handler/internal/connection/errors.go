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
