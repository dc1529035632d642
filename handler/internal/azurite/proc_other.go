//go:build !unix

package azurite

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// sysProcAttr: without process groups, Stop can only kill the process
// itself.
func sysProcAttr() *syscall.SysProcAttr { return nil }

func killGroup(p *os.Process) error {
	if err := p.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// waitGroupGone: nothing to wait for beyond the process itself.
func waitGroupGone(int, time.Duration) error { return nil }

// groupAlive: without process groups the tests cannot look; Stop's own
// wait is the check.
func groupAlive(int) bool { return false }
