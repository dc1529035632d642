package connection_test

import (
	"encoding/base64"
	"errors"
	"testing"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

type testCursor struct {
	connection.CursorHeader
	After string `json:"after"`
}

func TestCursorRoundTrip(t *testing.T) {
	in := testCursor{connection.NewCursorHeader(3, connection.StatusConnected), "u1"}
	s := connection.EncodeCursor(in)
	if want := base64.RawURLEncoding.EncodeToString([]byte(`{"v":3,"status":"connected","after":"u1"}`)); s != want {
		t.Errorf("EncodeCursor = %s, want %s (the header flattened, then the position)", s, want)
	}
	var out testCursor
	if err := connection.DecodeCursor(s, &out, 3, connection.StatusConnected); err != nil || out != in {
		t.Errorf("DecodeCursor = %+v, %v; want %+v", out, err, in)
	}
}

func TestDecodeCursorRefuses(t *testing.T) {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, tt := range []struct {
		name, cursor string
		status       connection.Status
	}{
		{"other version", enc(`{"v":2,"status":"","after":"p"}`), ""},
		{"no version", enc(`{"status":"","after":"p"}`), ""},
		{"unknown field", enc(`{"v":1,"status":"","after":"p","pk":"x"}`), ""},
		{"two objects", enc(`{"v":1,"status":"","after":"p"}{}`), ""},
		{"other status", enc(`{"v":1,"status":"connected","after":"p"}`), connection.StatusReconnectRequired},
		{"padded base64", base64.URLEncoding.EncodeToString([]byte(`{"v":1,"status":"","after":"p"}`)), ""},
		{"not json", enc("v=1"), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var c testCursor
			if err := connection.DecodeCursor(tt.cursor, &c, 1, tt.status); !errors.Is(err, connection.ErrBadCursor) {
				t.Errorf("DecodeCursor(%q) = %v, want ErrBadCursor", tt.cursor, err)
			}
		})
	}
}
