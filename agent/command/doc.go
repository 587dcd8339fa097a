// Package command owns what a device agrees to run: the allow-list. A Runner
// knows the built-ins (echo, info) and the named commands from the agent's
// config, each a fixed argv run with exec (never through a shell), and turns
// one tetherv1.Command into one tetherv1.CommandResult: bounded arguments,
// a timeout, combined output capped at a size, and an error text instead of
// a panic for anything it refuses.
//
// It does not talk to the server and does not limit how many commands run at
// once; the agent's session does both.
package command
