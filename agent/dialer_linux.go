package agent

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const haveUserTimeout = true

// userTimeoutControl sets TCP_USER_TIMEOUT on a TCP socket before it
// connects. A kernel that refuses the option only loses the extra bound; the
// dial goes on.
func userTimeoutControl(d time.Duration) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
		})
	}
}
