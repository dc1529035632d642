package tablestore

import (
	"encoding/base64"
	"errors"
	"testing"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

var fuzzStatuses = []connection.Status{"", connection.StatusConnected, connection.StatusReconnectRequired}

// FuzzDecodeCursor feeds any ?cursor= value to the parser the listing
// uses. It never panics; every refusal wraps connection.ErrBadCursor (the
// API's 400); an accepted cursor names a position, belongs to exactly the
// status it was decoded for, and means the same after a round trip through
// encodeCursor.
func FuzzDecodeCursor(f *testing.F) {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	f.Add(encodeCursor(continuation{PK: "1!12!YWJj", RK: "1!16!bWljcm9zb2Z0"}, connection.StatusConnected), uint8(1))
	f.Add(encodeCursor(continuation{PK: "1!8!eA--"}, ""), uint8(0))
	f.Add(enc(`{"v":1,"status":"reconnect_required","pk":"p","rk":""}`), uint8(2))
	f.Add(enc(`{"v":1,"status":"","pk":"p","after":"x"}`), uint8(0))
	f.Add(enc(`{"v":1,"status":"","pk":"p"} `), uint8(0))
	f.Add(enc(`{"v":1.0,"status":"","pk":"\u0000"}`), uint8(0))
	f.Add(enc(`{"V":1,"STATUS":"","PK":"p"}`), uint8(0))
	f.Add(enc(`{"v":1,"status":"","pk":"p","pk":""}`), uint8(0))
	f.Add("", uint8(0))
	f.Fuzz(func(t *testing.T, s string, which uint8) {
		status := fuzzStatuses[int(which)%len(fuzzStatuses)]
		next, err := decodeCursor(s, status)
		if err != nil {
			if !errors.Is(err, connection.ErrBadCursor) {
				t.Fatalf("decodeCursor(%q): %v is not ErrBadCursor", s, err)
			}
			return
		}
		if next.done() {
			t.Fatalf("decodeCursor(%q) accepted a cursor with no position", s)
		}
		for _, other := range fuzzStatuses {
			if _, err := decodeCursor(s, other); (err == nil) != (other == status) {
				t.Fatalf("cursor %q for status %q: decoding for %q gives %v", s, status, other, err)
			}
		}
		again, err := decodeCursor(encodeCursor(next, status), status)
		if err != nil || again != next {
			t.Fatalf("round trip of %+v: %+v, %v", next, again, err)
		}
	})
}
