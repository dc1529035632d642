package connection_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

func TestValidUserID(t *testing.T) {
	for _, id := range []string{"42", "a", "ada@contoso.com", "A-Z.a_z~0@9", "...", ".a", "~", strings.Repeat("z", 256)} {
		if err := connection.ValidUserID(id); err != nil {
			t.Errorf("ValidUserID(%q) = %v, want nil", id, err)
		}
	}
	// One of each class contract v2 rejects.
	for class, id := range map[string]string{
		"empty": "", "slash": "a/b", "hash": "a#b", "question mark": "a?b", "backslash": `a\b`, "percent": "a%2Fb",
		"space": "a b", "non-ASCII": "ü", "dot": ".", "dot dot": "..", "257 characters": strings.Repeat("z", 257),
		"control": "a\x00b", "invalid UTF-8": "\xff", "plus": "a+b", "quote": "a'b", "colon": "a:b",
	} {
		if err := connection.ValidUserID(id); !errors.Is(err, connection.ErrInvalidUserID) {
			t.Errorf("%s: ValidUserID(%q) = %v, want ErrInvalidUserID", class, id, err)
		}
	}
	// Exactly A-Z a-z 0-9 - . _ ~ @, byte by byte.
	const allowed = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~@"
	for b := 0; b < 256; b++ {
		id := "x" + string([]byte{byte(b)})
		if got, want := connection.ValidUserID(id) == nil, strings.IndexByte(allowed, byte(b)) >= 0; got != want {
			t.Errorf("byte 0x%02X: valid %t, want %t", b, got, want)
		}
	}
}
