package tablestore_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/tablestore/storetest"
)

// legalKey checks what Table Storage and this package's URLs need: no
// '/', '\', '#', '?', control characters (Table Storage), no '%' or '\”
// (URL and OData quoting), ASCII only, at most 512 characters (1 KiB of
// UTF-16).
func legalKey(key string) error {
	if key == "" || len(key) > 512 {
		return errors.New("empty or longer than 512 characters")
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c < 0x21 || c > 0x7e || strings.IndexByte(`/\#?%'`, c) >= 0 {
			return errors.New("illegal byte " + string(rune(c)))
		}
	}
	return nil
}

// TestValidUserIDIsALegalKey: the store uses a user_id as its PartitionKey
// without encoding, which is safe only while every id the rule accepts is
// a legal key.
func TestValidUserIDIsALegalKey(t *testing.T) {
	for _, id := range storetest.EdgeUserIDs() {
		if err := connection.ValidUserID(id); err != nil {
			t.Fatalf("fixture %q: %v", id, err)
		}
		if err := legalKey(id); err != nil {
			t.Errorf("valid user_id %q is not a legal key: %v", id, err)
		}
	}
}

// FuzzKeyEncoding: any string the rule accepts is a legal Table key as it is.
func FuzzKeyEncoding(f *testing.F) {
	for _, id := range append(storetest.EdgeUserIDs(), storetest.RejectedUserIDs()...) {
		f.Add(id)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if connection.ValidUserID(s) != nil {
			return
		}
		if err := legalKey(s); err != nil {
			t.Fatalf("ValidUserID accepts %q, which is not a legal key: %v", s, err)
		}
	})
}
