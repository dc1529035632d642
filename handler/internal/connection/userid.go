package connection

import "fmt"

// MaxUserIDLen is the contract's bound on a user_id, in characters (every
// allowed character is one byte).
const MaxUserIDLen = 256

// ValidUserID applies contract v2's user_id rule, the one rule every route,
// store and fuzz target uses: 1-256 characters, each one of
// A-Z a-z 0-9 - . _ ~ @ (RFC 3986's unreserved characters plus @), and not
// "." or "..". Why so strict: the id travels in URL paths, and the Functions
// host and Azure's front ends decode percent escapes before the handler
// sees the path (%3F becomes ?, %23 #, %5C \, %2F may become /), so any
// other character could reach another user's route; these survive that
// decoding unchanged, and "." and ".." are the only dot segments a client
// or proxy would resolve away. Errors wrap ErrInvalidUserID.
func ValidUserID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: empty", ErrInvalidUserID)
	case len(id) > MaxUserIDLen:
		return fmt.Errorf("%w: %d bytes, at most %d allowed", ErrInvalidUserID, len(id), MaxUserIDLen)
	case id == "." || id == "..":
		return fmt.Errorf("%w: %q is a path segment", ErrInvalidUserID, id)
	}
	for i := 0; i < len(id); i++ {
		if !userIDByte(id[i]) {
			return fmt.Errorf("%w: byte 0x%02X at %d is not one of A-Z a-z 0-9 - . _ ~ @", ErrInvalidUserID, id[i], i)
		}
	}
	return nil
}

func userIDByte(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' ||
		b == '-' || b == '.' || b == '_' || b == '~' || b == '@'
}
