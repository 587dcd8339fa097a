package agent

import (
	"time"

	"google.golang.org/grpc/keepalive"
)

// The agent's liveness numbers, in one place.
//
// The server enforces keepalive.EnforcementPolicy{MinTime: 10s,
// PermitWithoutStream: false} (server/keepalive.go). A client that pings more
// often than MinTime, or pings with no stream open, collects strikes and is
// cut off with GOAWAY too_many_pings, after which grpc-go doubles its ping
// interval for good. These values never come near that:
const (
	// keepaliveTime: the agent sends an HTTP/2 PING after 20s without
	// receiving anything. That is twice the server's MinTime, so even a
	// silent session never earns a strike, and it still finds a dead path
	// to the server (a crashed server, a NAT that forgot the flow) in
	// keepaliveTime + keepaliveTimeout = 25s.
	keepaliveTime = 20 * time.Second
	// keepaliveTimeout: a PING not acked within 5s means the connection is
	// dead; the stream fails and the loop reconnects.
	keepaliveTimeout = 5 * time.Second
	// keepalivePermitWithoutStream is false: a connected agent always has
	// its one stream open, and the server forbids pings without one.
	keepalivePermitWithoutStream = false

	// tcpUserTimeout is set as TCP_USER_TIMEOUT on the agent's own socket
	// (never as a sysctl): data left unacknowledged this long kills the
	// connection even while HTTP/2 keepalive is not looking (e.g. a Pong or
	// a command result stuck in the send buffer). It is above
	// keepaliveTime + keepaliveTimeout so that keepalive, which reports a
	// clearer error, normally fires first.
	tcpUserTimeout = 30 * time.Second
)

// ClientKeepalive returns the transport keepalive parameters the agent dials
// with. Tests on both sides use it to check the pair stays compatible.
func ClientKeepalive() keepalive.ClientParameters {
	return keepalive.ClientParameters{
		Time:                keepaliveTime,
		Timeout:             keepaliveTimeout,
		PermitWithoutStream: keepalivePermitWithoutStream,
	}
}
