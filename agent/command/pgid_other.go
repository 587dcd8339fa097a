//go:build !unix

package command

import (
	"os"
	"os/exec"
)

func setpgid(*exec.Cmd) {}

func killGroup(pid int) {
	if p, err := os.FindProcess(pid); err == nil {
		_ = p.Kill()
	}
}
