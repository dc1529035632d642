package connectflow

import "crypto/subtle"

// constantTimeEqual compares two hex digests of equal length without
// leaking where they differ.
func constantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
