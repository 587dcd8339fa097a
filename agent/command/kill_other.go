//go:build !unix

package command

import "os/exec"

// killProcessGroup keeps exec's default: kill the process itself.
func killProcessGroup(*exec.Cmd) {}
