// Package lostreply is a TCP proxy for fault tests that loses replies, not
// requests: bytes from the client to the server are forwarded at once, bytes
// from the server back to the client are held for a configurable delay or
// dropped. Put in front of Redis with a delay longer than the caller's
// timeout, it produces the ambiguous outcome a slow network or a busy proxy
// produces in production: the command ran, the caller never learned it.
//
// The mode is switchable at run time (Forward, Delay, Drop) and applies to
// bytes as they arrive from the server. Held bytes are bounded per
// connection; Close ends every connection and discards what is held (so a
// replication stream fed through it loses its tail). It is for tests only.
package lostreply
