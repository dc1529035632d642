package tablestore

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxUserIDBytes is the contract's bound on a user_id.
const MaxUserIDBytes = 256

// ErrInvalidUserID: the user_id breaks the contract's rule (1-256 bytes of
// UTF-8, no control characters, not "." or ".."). No such connection can
// exist, so stores refuse it before any I/O.
var ErrInvalidUserID = errors.New("invalid user_id")

// ValidUserID applies the contract's user_id rule (POST /api/connect-sessions):
// 1-256 bytes of valid UTF-8, no control character (C0, DEL or C1), and not
// "." or ".." (they cannot be a path segment). Errors wrap ErrInvalidUserID.
func ValidUserID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: empty", ErrInvalidUserID)
	case len(id) > MaxUserIDBytes:
		return fmt.Errorf("%w: %d bytes, at most %d allowed", ErrInvalidUserID, len(id), MaxUserIDBytes)
	case !utf8.ValidString(id):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidUserID)
	case id == "." || id == "..":
		return fmt.Errorf("%w: %q is a path segment", ErrInvalidUserID, id)
	}
	for i, r := range id {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			return fmt.Errorf("%w: control character U+%04X at byte %d", ErrInvalidUserID, r, i)
		}
	}
	return nil
}

// keyEscape starts an escaped byte. It is not in the kept set, so it is
// always escaped itself and the encoding stays reversible.
const keyEscape = '~'

// MaxKeyLen is Table Storage's key limit: 1 KiB of UTF-16, 512 characters
// (Azurite enforces exactly that). Escaping can triple a user_id's length,
// so a 256-byte user_id of non-ASCII text would need 768: such keys use the
// compact form instead.
const MaxKeyLen = 512

// compactPrefix starts the compact form, "~~" + base64url(user_id). An
// escaped key never contains "~~" ('~' is always followed by a hex digit),
// so the two forms cannot collide.
const compactPrefix = "~~"

// keptByte reports whether b stays as it is in an encoded key: letters,
// digits and "-_.@", which keep common user IDs (numbers, e-mail addresses,
// slugs) readable for an admin browsing the table.
func keptByte(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' ||
		b == '-' || b == '_' || b == '.' || b == '@'
}

const upperHex = "0123456789ABCDEF"

// escapedLen is the length of user_id's escaped form.
func escapedLen(userID string) int {
	n := len(userID)
	for i := 0; i < len(userID); i++ {
		if !keptByte(userID[i]) {
			n += 2
		}
	}
	return n
}

// EncodeKey turns a user_id into a legal Table Storage key (PartitionKey).
// Bytes [A-Za-z0-9-_.@] stay, every other byte of the UTF-8 becomes ~XX
// (upper-case hex): readable for the IDs admins meet, and free of what keys
// forbid ('/', '\', '#', '?', control characters) and of what SDKs and
// proxies mishandle in key URLs (the percent sign, the single quote). When
// that would exceed MaxKeyLen, the key is "~~" + base64url(user_id)
// instead, at most 346 characters for a contract-valid user_id. Both forms
// are injective and DecodeKey reverses them.
func EncodeKey(userID string) string {
	n := escapedLen(userID)
	switch {
	case n > MaxKeyLen:
		return compactPrefix + base64.RawURLEncoding.EncodeToString([]byte(userID))
	case n == len(userID):
		return userID
	}
	var b strings.Builder
	b.Grow(n)
	for i := 0; i < len(userID); i++ {
		c := userID[i]
		if keptByte(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte(keyEscape)
		b.WriteByte(upperHex[c>>4])
		b.WriteByte(upperHex[c&0xf])
	}
	return b.String()
}

// ErrBadKey: a key EncodeKey cannot have produced.
var ErrBadKey = errors.New("not an encoded key")

// DecodeKey reverses EncodeKey. It accepts only EncodeKey's exact output
// (upper-case hex, no escaped kept byte, the compact form only where the
// escaped one is too long), so every user_id has exactly one key and every
// key names at most one user_id. Errors wrap ErrBadKey.
func DecodeKey(key string) (string, error) {
	if rest, ok := strings.CutPrefix(key, compactPrefix); ok {
		b, err := base64.RawURLEncoding.Strict().DecodeString(rest)
		if err != nil || strings.ContainsAny(rest, "\r\n") {
			return "", fmt.Errorf("tablestore: decode key: %w: bad compact form", ErrBadKey)
		}
		if escapedLen(string(b)) <= MaxKeyLen {
			return "", fmt.Errorf("tablestore: decode key: %w: compact form of a short key", ErrBadKey)
		}
		return string(b), nil
	}
	if len(key) > MaxKeyLen {
		return "", fmt.Errorf("tablestore: decode key: %w: escaped form longer than %d", ErrBadKey, MaxKeyLen)
	}
	if !strings.ContainsRune(key, keyEscape) {
		for i := 0; i < len(key); i++ {
			if !keptByte(key[i]) {
				return "", fmt.Errorf("tablestore: decode key: %w: byte 0x%02X at %d", ErrBadKey, key[i], i)
			}
		}
		return key, nil
	}
	out := make([]byte, 0, len(key))
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case keptByte(c):
			out = append(out, c)
		case c == keyEscape:
			if i+2 >= len(key) {
				return "", fmt.Errorf("tablestore: decode key: %w: truncated escape at %d", ErrBadKey, i)
			}
			hi, lo := unhex(key[i+1]), unhex(key[i+2])
			if hi < 0 || lo < 0 {
				return "", fmt.Errorf("tablestore: decode key: %w: bad escape at %d", ErrBadKey, i)
			}
			d := byte(hi<<4 | lo)
			if keptByte(d) {
				return "", fmt.Errorf("tablestore: decode key: %w: needless escape at %d", ErrBadKey, i)
			}
			out = append(out, d)
			i += 2
		default:
			return "", fmt.Errorf("tablestore: decode key: %w: byte 0x%02X at %d", ErrBadKey, c, i)
		}
	}
	return string(out), nil
}

// unhex decodes one upper-case hex digit, -1 otherwise.
func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
