//go:build !unix

package azurite

// groupAlive: without process groups the tests cannot look; Stop's own
// wait is the check.
func groupAlive(pid int) bool { return false }
