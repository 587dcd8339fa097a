//go:build !linux

package agent

import (
	"syscall"
	"time"
)

const haveUserTimeout = false

func userTimeoutControl(time.Duration) func(string, string, syscall.RawConn) error { return nil }
