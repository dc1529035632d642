//go:build unix && !linux

package azurite

import "syscall"

// tieToParent: only Linux can tie a child's life to its parent's
// (Pdeathsig); elsewhere Stop and the test's cleanup are the only kill.
func tieToParent(*syscall.SysProcAttr) {}
