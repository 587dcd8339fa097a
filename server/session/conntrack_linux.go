package session

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// Unread is how many bytes the kernel holds for this connection that no
// one has read yet (SIOCINQ): bytes the peer sent that a busy server has
// not got to. 0 when it cannot tell.
func (c *Conn) Unread() int {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return 0
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	_ = raw.Control(func(fd uintptr) {
		v, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		if err == nil {
			n = v
		}
	})
	return n
}
