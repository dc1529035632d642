//go:build unix

package azurite

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

// sysProcAttr puts the emulator in its own process group, so Stop can kill
// Node and anything it spawned at once; where the kernel can, it also ties
// the emulator's life to the test binary's (tieToParent).
func sysProcAttr() *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	tieToParent(a)
	return a
}

// killGroup kills the process group led by p.
func killGroup(p *os.Process) error {
	if err := syscall.Kill(-p.Pid, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		return err
	}
	return nil
}

// waitGroupGone waits until no process of the group led by pid is left.
func waitGroupGone(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for groupAlive(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("process group %d still has processes after %v", pid, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// groupAlive reports whether any process of the group led by pid is left.
func groupAlive(pid int) bool {
	return syscall.Kill(-pid, 0) != syscall.ESRCH
}
