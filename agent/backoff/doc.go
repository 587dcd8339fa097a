// Package backoff owns the agent's reconnect delays: exponential growth from
// an initial delay to a cap, with full jitter (a uniform draw between zero and
// the current ceiling) so that a fleet of agents cut off at the same moment
// does not come back in lockstep.
//
// It only computes delays. It does not sleep, does not decide when a session
// counts as stable (the agent's loop calls Reset), and is not safe for
// concurrent use: one loop owns one Backoff.
package backoff
