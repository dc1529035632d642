package azurite

import "syscall"

// tieToParent asks the kernel to kill the emulator if the test binary dies
// without calling Stop (a panic, a -timeout, SIGKILL): no orphaned emulator
// keeps a port and memory on a shared machine. (The kernel sends the signal
// when the forking thread exits; the Go runtime keeps its threads for the
// life of the process unless a goroutine exits while locked to one, which
// this package never does.)
func tieToParent(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
