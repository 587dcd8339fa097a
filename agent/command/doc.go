// Package command owns what a device agrees to run: the allow-list. A Runner
// knows the built-ins (echo, info) and the named commands from the agent's
// config, each a fixed argv run with exec (never through a shell), and turns
// one tetherv1.Command into one tetherv1.CommandResult: bounded arguments,
// a timeout, combined output capped at a size, and an error text instead of
// a panic for anything it refuses. A command leaves nothing behind: it runs
// in its own process group and, where the agent may create one (a systemd
// unit with Delegate=yes, or root), its own cgroup v2; when it exits or
// times out, everything it started is killed (the cgroup, the group, and
// any process carrying the run's environment marker, which finds children
// that called setsid when there is no cgroup), and the exit code is the
// command's own even when a child still held its output pipe.
//
// It does not talk to the server and does not limit how many commands run at
// once; the agent's session does both.
package command
