package tablestore

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

func TestCursorRoundTrip(t *testing.T) {
	for _, status := range []connection.Status{"", connection.StatusConnected, connection.StatusReconnectRequired} {
		for _, next := range []continuation{{PK: "1!12!YWJj", RK: "1!16!bWljcm9zb2Z0"}, {PK: "1!8!eA--"}} {
			s := encodeCursor(next, status)
			got, err := decodeCursor(s, status)
			if err != nil || got != next {
				t.Errorf("decodeCursor(encodeCursor(%+v, %q)) = %+v, %v", next, status, got, err)
			}
		}
	}
}

// The wire format of a cursor does not change with its code: a cursor a
// client holds across a deployment still decodes.
func TestCursorFormatIsStable(t *testing.T) {
	want := base64.RawURLEncoding.EncodeToString([]byte(`{"v":1,"status":"connected","pk":"1!8!eA--","rk":"r"}`))
	if got := encodeCursor(continuation{PK: "1!8!eA--", RK: "r"}, connection.StatusConnected); got != want {
		t.Errorf("encodeCursor = %s, want %s", got, want)
	}
}

func TestDecodeCursorRefuses(t *testing.T) {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name, cursor string
		status       connection.Status
	}{
		{"other version", enc(`{"v":2,"status":"","pk":"p"}`), ""},
		{"no version", enc(`{"status":"","pk":"p"}`), ""},
		{"no position", enc(`{"v":1,"status":""}`), ""},
		{"unknown field", enc(`{"v":1,"status":"","pk":"p","after":"x"}`), ""},
		{"two objects", enc(`{"v":1,"status":"","pk":"p"}{}`), ""},
		{"other status", enc(`{"v":1,"status":"connected","pk":"p"}`), connection.StatusReconnectRequired},
		{"standard base64", base64.StdEncoding.EncodeToString([]byte(`{"v":1,"status":"","pk":"p>?"}`)), ""},
		{"not json", enc("v=1"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decodeCursor(tt.cursor, tt.status); !errors.Is(err, connection.ErrBadCursor) {
				t.Errorf("decodeCursor(%q) = %v, want ErrBadCursor", tt.cursor, err)
			}
		})
	}
	if _, err := decodeCursor(enc(`{"v":1,"status":"connected","pk":"p"}`), connection.StatusConnected); err != nil {
		t.Errorf("a well-formed cursor: %v", err)
	}
}

func TestMapError(t *testing.T) {
	resp := func(status int, code string) error {
		return fmt.Errorf("sdk: %w", &azcore.ResponseError{StatusCode: status, ErrorCode: code})
	}
	tests := []struct {
		name string
		err  error
		want error // nil: neither sentinel
	}{
		{"missing entity", resp(http.StatusNotFound, "ResourceNotFound"), connection.ErrNotFound},
		{"missing table", resp(http.StatusNotFound, "TableNotFound"), nil},
		{"entity exists", resp(http.StatusConflict, "EntityAlreadyExists"), connection.ErrConflict},
		{"table being deleted", resp(http.StatusConflict, "TableBeingDeleted"), nil},
		{"etag mismatch", resp(http.StatusPreconditionFailed, "UpdateConditionNotSatisfied"), connection.ErrConflict},
		{"throttled", resp(http.StatusServiceUnavailable, "ServerBusy"), nil},
		{"not a service error", errors.New("dial tcp: refused"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mapError(tt.err)
			if !errors.Is(got, tt.err) {
				t.Errorf("mapError lost the original error: %v", got)
			}
			for _, sentinel := range []error{connection.ErrNotFound, connection.ErrConflict} {
				if is := errors.Is(got, sentinel); is != (sentinel == tt.want) {
					t.Errorf("errors.Is(mapError(%v), %v) = %t", tt.err, sentinel, is)
				}
			}
		})
	}
}

// The table check reads the connections table at a key no user can have:
// were it a valid user_id, the probe would read (and a change to it could
// touch) a real user's row.
func TestConnectionsProbeKeyIsNoUser(t *testing.T) {
	if err := connection.ValidUserID(connectionsProbeKey); err == nil {
		t.Errorf("probe key %q is a valid user_id", connectionsProbeKey)
	}
}
