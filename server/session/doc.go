// Package session owns the streams this replica holds: one Session per
// AgentService.Connect stream, and the Hub that maps each device to its one
// current local session.
//
// A Session's handler goroutine owns all of its state and timers (Ping
// schedule, Pong deadline, end reason) and is the only caller of Send; one
// more goroutine owns the stream's receive loop (the only caller of Recv). The Hub is the
// only way into the registry: a Hello is validated, the store allocates a
// lease (Claim), and every later write names that lease, so a session that was
// replaced can never change the record of the session that replaced it.
// Sessions are removed from the Hub by (device, exact session), never by
// device alone.
//
// This package must not serve the fleet API (package deviceapi does) nor know
// which store implementation is in use.
package session
