package connection_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// multi wraps several errors (Go 1.20's Unwrap() []error), like
// secrets.NotConfiguredError.
type multi []error

func (m multi) Error() string   { return "multi" }
func (m multi) Unwrap() []error { return m }

// TestErrorCodeAndMessage: the code and message come from the first
// *connection.Error in the chain, however it is wrapped; anything else is
// internal_error with no detail.
func TestErrorCodeAndMessage(t *testing.T) {
	inner := connection.Errorf(connection.EInvalid, "inner")
	outer := &connection.Error{Code: connection.EUnavailable, Message: "outer", Err: inner}
	for _, tt := range []struct {
		name      string
		err       error
		code, msg string
	}{
		{"nil", nil, "", ""},
		{"plain", errors.New("dial tcp: secret detail"), connection.EInternal, "internal error"},
		{"sentinel", connection.ErrNotFound, connection.ENotConnected, "this user has no Microsoft connection"},
		{"wrapped sentinel", fmt.Errorf("store: get: %w", connection.ErrBadCursor), connection.EInvalid, connection.ErrBadCursor.Message},
		{"outer wins", fmt.Errorf("x: %w", outer), connection.EUnavailable, "outer"},
		{"multi", multi{connection.ErrReconnectRequired, errors.New("cause")}, connection.EReconnectRequired, connection.ErrReconnectRequired.Message},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := connection.ErrorCode(tt.err); got != tt.code {
				t.Errorf("ErrorCode = %q, want %q", got, tt.code)
			}
			if got := connection.ErrorMessage(tt.err); got != tt.msg {
				t.Errorf("ErrorMessage = %q, want %q", got, tt.msg)
			}
		})
	}
}

// TestErrorUnwrapsItsCause: classification of the cause (errors.Is/As)
// survives the coded wrapper.
func TestErrorUnwrapsItsCause(t *testing.T) {
	cause := errors.New("cause")
	err := fmt.Errorf("svc: %w", &connection.Error{Code: connection.EUnavailable, Message: "m", Err: cause})
	if !errors.Is(err, cause) {
		t.Errorf("errors.Is(%v, cause) = false", err)
	}
	if got := err.Error(); got != "svc: m: cause" {
		t.Errorf("Error() = %q, want %q", got, "svc: m: cause")
	}
}

// TestValidUserIDIsInvalidRequest: every refusal of the user_id rule is the
// coded ErrInvalidUserID, so every route answers it 400 invalid_request.
func TestValidUserIDIsInvalidRequest(t *testing.T) {
	for _, id := range []string{"", ".", "..", "a/b", "ü"} {
		err := connection.ValidUserID(id)
		if !errors.Is(err, connection.ErrInvalidUserID) || connection.ErrorCode(err) != connection.EInvalid {
			t.Errorf("ValidUserID(%q) = %v (code %q), want ErrInvalidUserID, invalid_request", id, err, connection.ErrorCode(err))
		}
	}
}
