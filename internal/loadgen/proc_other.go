//go:build !linux

package loadgen

import "syscall"

// raiseFDLimit is a no-op off Linux: the limit is reported as unlimited.
func raiseFDLimit() (uint64, error) { return 1<<63 - 1, nil }

func openFDs() int { return -1 }

func rssBytes() int64 { return -1 }

func socketControl(bool) func(network, address string, c syscall.RawConn) error { return nil }
