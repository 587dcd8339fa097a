package loadgen

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// raiseFDLimit raises the soft RLIMIT_NOFILE to the hard limit and returns
// the limit now in force (the soft one, which is the hard one unless the
// raise failed).
func raiseFDLimit() (limit uint64, err error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur < rl.Max {
		want := rl
		want.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
			return rl.Cur, err
		}
		rl = want
	}
	return rl.Cur, nil
}

// openFDs counts the entries of /proc/self/fd (-1 when unknown).
func openFDs() int {
	f, err := os.Open("/proc/self/fd")
	if err != nil {
		return -1
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return -1
	}
	return len(names) - 1 // the directory handle itself
}

// rssBytes reads VmRSS from /proc/self/status (-1 when unknown).
func rssBytes() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest) // "123456 kB"
		if len(fields) == 0 {
			return -1
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return -1
		}
		return kb << 10
	}
	return -1
}

// socketControl is the net.Dialer Control for the agents' sockets: with a
// bound source address, IP_BIND_ADDRESS_NO_PORT defers the choice of the
// local port to connect(), so that a port is unique per 4-tuple rather than
// per source address (without it bind() reserves the port for every
// destination, and one source address runs out after ~28k connections
// however many replicas there are). TCP_USER_TIMEOUT matches the agent's.
// Errors setting the options are ignored: they only lose an optimization.
func socketControl(bound bool) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) {
			if bound {
				_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			}
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(tcpUserTimeout/time.Millisecond))
		})
	}
}
