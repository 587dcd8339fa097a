//go:build unix

package command

import (
	"os/exec"
	"syscall"
)

// killProcessGroup runs cmd in its own process group and makes cancellation
// kill the whole group, so that a timed-out command's children die with it.
func killProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
