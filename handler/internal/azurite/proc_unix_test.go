//go:build unix

package azurite

import "syscall"

// groupAlive reports whether any process of the group led by pid is left.
func groupAlive(pid int) bool {
	return syscall.Kill(-pid, 0) != syscall.ESRCH
}
