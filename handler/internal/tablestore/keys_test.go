package tablestore_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/megdocs/msconnector/handler/internal/tablestore"
	"github.com/megdocs/msconnector/handler/internal/tablestore/storetest"
)

func TestEncodeKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"42", "42"},
		{"ada.lovelace@contoso.com", "ada.lovelace@contoso.com"},
		{"A-Z_a-z.0-9@", "A-Z_a-z.0-9@"},
		{"a/b", "a~2Fb"},
		{"x#y?z", "x~23y~3Fz"},
		{`back\slash`, "back~5Cslash"},
		{"quote'", "quote~27"},
		{"percent%2F", "percent~252F"},
		{"~", "~7E"},
		{"a~2Fb", "a~7E2Fb"},
		{"sp ace", "sp~20ace"},
		{"é", "~C3~A9"},
		{"日", "~E6~97~A5"},
		{"\x00\x7f\xff", "~00~7F~FF"},
		{"", ""},
		// 170 escaped bytes fit in 510 characters; 171 would need 513.
		{strings.Repeat("/", 170), strings.Repeat("~2F", 170)},
		{strings.Repeat("/", 171), "~~" + base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat("/", 171)))},
		{"x" + strings.Repeat("é", 85), "x" + strings.Repeat("~C3~A9", 85)},
		{strings.Repeat("é", 128), "~~" + base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat("é", 128)))},
	}
	for _, tt := range tests {
		if got := tablestore.EncodeKey(tt.in); got != tt.want {
			t.Errorf("EncodeKey(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if got, err := tablestore.DecodeKey(tt.want); err != nil || got != tt.in {
			t.Errorf("DecodeKey(%q) = %q, %v; want %q", tt.want, got, err, tt.in)
		}
	}
}

func TestDecodeKeyRefusesWhatEncodeKeyNeverWrites(t *testing.T) {
	for _, key := range []string{
		"a/b",     // a byte that must be escaped
		"a b",     // same
		"~2f",     // lower-case hex
		"~41",     // an escaped byte that is kept as it is ('A')
		"~2",      // truncated
		"~",       // truncated
		"abc~",    // truncated
		"~G0",     // not hex
		"x\u00e9", // raw non-ASCII
		"~~" + base64.RawURLEncoding.EncodeToString([]byte("a/b")),                          // compact form of a short key
		"~~" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("\xff", 171))),       // not base64url
		"~~" + base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat("/", 171))) + "=", // padded
		strings.Repeat("a", tablestore.MaxKeyLen+1),                                         // plain but too long
	} {
		if got, err := tablestore.DecodeKey(key); !errors.Is(err, tablestore.ErrBadKey) {
			t.Errorf("DecodeKey(%q) = %q, %v; want ErrBadKey", key, got, err)
		}
	}
}

func TestEncodeKeyFitsTableKeys(t *testing.T) {
	for _, id := range append(storetest.WeirdUserIDs(), strings.Repeat("/", 256), strings.Repeat("\U0010FFFF", 64)) {
		key := tablestore.EncodeKey(id)
		if err := legalKey(key); err != nil {
			t.Errorf("EncodeKey(%q) = %q: %v", id, key, err)
		}
	}
}

// legalKey checks what Table Storage and this package's URLs need: no
// '/', '\', '#', '?', control characters (Table Storage), no '%' or '\”
// (URL and OData quoting), ASCII only, at most 512 characters (1 KiB of
// UTF-16).
func legalKey(key string) error {
	if len(key) > 512 {
		return errors.New("longer than 512 characters")
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c < 0x21 || c > 0x7e || strings.IndexByte(`/\#?%'`, c) >= 0 {
			return errors.New("illegal byte " + string(rune(c)))
		}
	}
	return nil
}

func TestValidUserID(t *testing.T) {
	valid := append([]string{"42", "a", "...", "日本", strings.Repeat("x", 256)}, storetest.WeirdUserIDs()...)
	for _, id := range valid {
		if err := tablestore.ValidUserID(id); err != nil {
			t.Errorf("ValidUserID(%q) = %v, want nil", id, err)
		}
	}
	for _, id := range []string{
		"", ".", "..", strings.Repeat("x", 257), strings.Repeat("é", 128) + "x",
		"\x00", "a\tb", "a\nb", "\x1f", "\x7f", "\u0080", "\u009f", "a\u0085b",
		"\xff", "\xc3", "a\xed\xa0\x80b", // invalid UTF-8 (a surrogate)
	} {
		if err := tablestore.ValidUserID(id); !errors.Is(err, tablestore.ErrInvalidUserID) {
			t.Errorf("ValidUserID(%q) = %v, want ErrInvalidUserID", id, err)
		}
	}
	// U+00A0 (no-break space) is past C1: allowed.
	if err := tablestore.ValidUserID("\u00a0"); err != nil {
		t.Errorf("ValidUserID(U+00A0) = %v, want nil", err)
	}
}

// FuzzKeyEncoding checks, for any string: EncodeKey round-trips through
// DecodeKey, writes only legal key bytes, at most three per input byte, and
// a legal Table key (at most 512 characters) for every valid user_id; and
// DecodeKey accepts only canonical keys (decoding then encoding gives the
// key back).
func FuzzKeyEncoding(f *testing.F) {
	for _, id := range storetest.WeirdUserIDs() {
		f.Add(id)
	}
	f.Fuzz(func(t *testing.T, s string) {
		key := tablestore.EncodeKey(s)
		got, err := tablestore.DecodeKey(key)
		if err != nil || got != s {
			t.Fatalf("DecodeKey(EncodeKey(%q)) = %q, %v", s, got, err)
		}
		for i := 0; i < len(key); i++ {
			c := key[i]
			ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.@~", c) >= 0
			if !ok {
				t.Fatalf("EncodeKey(%q) = %q has byte %q", s, key, c)
			}
		}
		if len(key) > 3*len(s) {
			t.Fatalf("EncodeKey(%q) is %d bytes for %d", s, len(key), len(s))
		}
		if tablestore.ValidUserID(s) == nil {
			if err := legalKey(key); err != nil {
				t.Fatalf("EncodeKey(%q) = %q: %v", s, key, err)
			}
		}
		// The input as a key: decodes only if canonical.
		if d, err := tablestore.DecodeKey(s); err == nil {
			if tablestore.EncodeKey(d) != s {
				t.Fatalf("DecodeKey(%q) = %q, which encodes to %q: two keys for one user_id", s, d, tablestore.EncodeKey(d))
			}
		}
	})
}
