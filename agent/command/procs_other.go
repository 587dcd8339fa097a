//go:build !linux

package command

import (
	"os/exec"
)

// procs is the command's process group (unix) or just its process.
type procs struct{ pid int }

func prepare(cmd *exec.Cmd, _ bool) *procs {
	setpgid(cmd)
	return &procs{}
}

func (p *procs) hasCgroup() bool { return false }

func (p *procs) isolation() string { return "process group" }

func (p *procs) started(pid int) { p.pid = pid }

func (p *procs) killAll() {
	if p.pid > 0 {
		killGroup(p.pid)
	}
}

func (p *procs) cleanup() error { return nil }
