package testredis

import (
	"os/exec"
	"syscall"
)

// setProcAttr makes the kernel kill redis-server when the test process
// dies, so that a crashed or killed test run leaves no server behind.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
