package connection

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
)

// The format of Page.NextCursor, which every Store shares: base64url (no
// padding) of one JSON object holding a CursorHeader and the store's own
// position fields. The header binds a cursor to the status filter it was
// issued for (a position in a filtered listing means nothing to another)
// and to the store's format version, so an older cursor is refused as
// bad rather than misread.

// CursorHeader is embedded in a store's cursor struct; JSON flattens it.
type CursorHeader struct {
	V      int    `json:"v"`
	Status string `json:"status"`
}

// NewCursorHeader is the header of a cursor issued by a store writing
// format version for a listing filtered by status.
func NewCursorHeader(version int, status Status) CursorHeader {
	return CursorHeader{V: version, Status: string(status)}
}

func (h CursorHeader) cursorHeader() CursorHeader { return h }

// EncodeCursor returns c, a store's cursor struct (strings and numbers, so
// marshalling cannot fail), as an opaque NextCursor.
func EncodeCursor(c any) string {
	b, err := json.Marshal(c)
	if err != nil {
		panic(err) // strings and numbers only: cannot fail
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeCursor fills c (a pointer to a store's cursor struct, which embeds
// CursorHeader) from s, strictly: base64url without padding, one JSON
// object with no field c lacks, issued by format version for a listing
// filtered by status. Every refusal wraps ErrBadCursor. Whether c holds a
// position is the store's to check.
func DecodeCursor(s string, c interface{ cursorHeader() CursorHeader }, version int, status Status) error {
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return fmt.Errorf("%w: not base64url", ErrBadCursor)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil || dec.More() {
		return fmt.Errorf("%w: not a cursor", ErrBadCursor)
	}
	switch h := c.cursorHeader(); {
	case h.V != version:
		return fmt.Errorf("%w: version %d", ErrBadCursor, h.V)
	case h.Status != string(status):
		return fmt.Errorf("%w: issued for status %q, used with %q", ErrBadCursor, h.Status, status)
	}
	return nil
}
