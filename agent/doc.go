// Package agent owns the device side of Tether: one loop that dials the
// server, opens the AgentService/Connect stream, sends Hello, waits for
// HelloAck and then serves the session (answers Ping with Pong, runs
// allow-listed commands, reports changed device info) until the stream ends,
// then backs off with full jitter and starts over, until its context ends.
//
// Per session, exactly one goroutine calls stream.Send (the send loop, fed by
// a bounded queue) and one calls stream.Recv; commands run in their own
// goroutines and hand their results to the send loop. The agent's liveness
// numbers (transport keepalive, TCP_USER_TIMEOUT) live in keepalive.go.
//
// The package does not parse flags or files (cmd/tether-agent and
// agent/config do), does not run commands itself (agent/command does), and
// does not speak sd_notify (it reports to a Notifier; agent/sdnotify
// implements one).
package agent
