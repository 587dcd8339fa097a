// Package sdnotify owns the agent's side of the systemd notify protocol
// (sd_notify(3)): READY=1, STATUS=..., WATCHDOG=1 and STOPPING=1, sent as
// datagrams to $NOTIFY_SOCKET (a path, or an abstract name starting with
// '@'), and the watchdog interval read from $WATCHDOG_USEC.
//
// Everything is a no-op when NOTIFY_SOCKET is unset, so the agent runs the
// same with or without systemd. The package does not decide when the process
// is ready or alive; the caller does.
package sdnotify
