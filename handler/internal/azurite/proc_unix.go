//go:build unix && !linux

package azurite

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

// sysProcAttr puts the emulator in its own process group, so Stop can kill
// Node and anything it spawned at once. (Only Linux can also tie the child's
// life to ours: see proc_linux.go.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
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
	for syscall.Kill(-pid, 0) != syscall.ESRCH {
		if time.Now().After(deadline) {
			return fmt.Errorf("process group %d still has processes after %v", pid, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}
