//go:build !linux

package session

// Unread is 0 where the kernel's receive queue cannot be read.
func (c *Conn) Unread() int { return 0 }
