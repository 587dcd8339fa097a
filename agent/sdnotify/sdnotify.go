package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Environment variables of the protocol.
const (
	EnvSocket      = "NOTIFY_SOCKET"
	EnvWatchdog    = "WATCHDOG_USEC"
	EnvWatchdogPID = "WATCHDOG_PID"
)

// Notifier sends state changes to the service manager. The zero value and a
// nil *Notifier are valid and do nothing. Methods are safe for concurrent
// use (each message is one datagram on its own socket).
type Notifier struct {
	addr     string        // "" = not under a notify-aware manager
	watchdog time.Duration // half of WATCHDOG_USEC; 0 = no watchdog
}

// New returns a Notifier for socket (a filesystem path or an '@' abstract
// name; "" gives a no-op) that asks for WATCHDOG=1 every watchdogEvery (0 =
// never). Use FromEnv in programs; New is for tests and explicit setups.
func New(socket string, watchdogEvery time.Duration) *Notifier {
	return &Notifier{addr: socket, watchdog: max(watchdogEvery, 0)}
}

// FromEnv reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. The watchdog
// interval is half of WATCHDOG_USEC, as sd_watchdog_enabled(3) advises, and
// zero when WATCHDOG_PID names another process. With unset, the three
// variables are removed from the environment so that child processes (the
// agent's commands) do not inherit them.
//
// On a malformed value FromEnv still returns a usable Notifier (without the
// part that was malformed) together with an error describing it.
func FromEnv(unset bool) (*Notifier, error) {
	socket := os.Getenv(EnvSocket)
	usec, pid := os.Getenv(EnvWatchdog), os.Getenv(EnvWatchdogPID)
	if unset {
		os.Unsetenv(EnvSocket)
		os.Unsetenv(EnvWatchdog)
		os.Unsetenv(EnvWatchdogPID)
	}
	var errs []error
	n := &Notifier{}
	switch {
	case socket == "":
		return n, nil
	case strings.HasPrefix(socket, "/") || strings.HasPrefix(socket, "@"):
		n.addr = socket
	default:
		return n, fmt.Errorf("%s=%q: only filesystem paths and @abstract names are supported", EnvSocket, socket)
	}
	if usec != "" {
		v, err := strconv.ParseUint(usec, 10, 63)
		switch {
		case err != nil || v == 0:
			errs = append(errs, fmt.Errorf("%s=%q: want a positive number of microseconds; watchdog disabled", EnvWatchdog, usec))
		case pid != "" && pid != strconv.Itoa(os.Getpid()):
			// The watchdog is meant for another process of the unit.
		default:
			n.watchdog = time.Duration(v) * time.Microsecond / 2
		}
	}
	return n, errors.Join(errs...)
}

// Enabled reports whether messages go anywhere.
func (n *Notifier) Enabled() bool { return n != nil && n.addr != "" }

// WatchdogInterval is how often WATCHDOG=1 must be sent (half the manager's
// timeout), or 0 when no watchdog is configured.
func (n *Notifier) WatchdogInterval() time.Duration {
	if !n.Enabled() {
		return 0
	}
	return n.watchdog
}

// Notify sends the given assignments (e.g. "READY=1", "STATUS=up") as one
// message. It does nothing when the Notifier is not enabled.
func (n *Notifier) Notify(assignments ...string) error {
	if !n.Enabled() || len(assignments) == 0 {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(assignments, "\n") + "\n")); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// Ready tells the manager that start-up is finished.
func (n *Notifier) Ready() error { return n.Notify("READY=1") }

// Stopping tells the manager that the service is shutting down.
func (n *Notifier) Stopping() error { return n.Notify("STOPPING=1") }

// Watchdog resets the manager's watchdog timer.
func (n *Notifier) Watchdog() error { return n.Notify("WATCHDOG=1") }

// Status sets the one-line status shown by systemctl status. Newlines are
// replaced by spaces, since a newline would start a new assignment.
func (n *Notifier) Status(s string) error {
	return n.Notify("STATUS=" + strings.NewReplacer("\n", " ", "\r", " ").Replace(s))
}
