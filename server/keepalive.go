package server

import (
	"time"

	"google.golang.org/grpc/keepalive"

	"github.com/tetherhq/tether/server/session"
)

// AgentKeepaliveMinTime is the shortest client keepalive interval the server
// tolerates. The agent sends HTTP/2 pings every 20s at most (agent/keepalive.go)
// and only while a stream is open, so 10s leaves a 2x margin: a shipped agent
// never earns a too_many_pings GOAWAY, while a client that pings several
// times a second is cut off. (With the default 10s ping interval the
// server's own keepalive keeps the transport busy and the agent rarely needs
// to ping at all; with a ping interval above 20s it does, and this policy is
// what keeps that legal — server/server_test.go runs both.)
const AgentKeepaliveMinTime = 10 * time.Second

// serverKeepalive derives the transport keepalive from the liveness config:
// a connection with no inbound traffic for PingInterval is pinged, and closed
// when the ping is not acked within PingTimeout. For legacy agents that never
// answer application Pings this is the only liveness check, so it uses the
// same numbers and the same detection bound. MaxConnectionAge stays
// infinite: devices hold one stream for days. MaxConnectionIdle (idle > 0)
// closes a connection that has had no open stream for that long: agents
// always hold their stream, so it only reaps connections that hold a file
// descriptor without doing anything (an abandoned client, a scanner that
// completed the HTTP/2 preface, an idle gateway or peer connection, which
// reconnects on its next call).
func serverKeepalive(c session.Config, idle time.Duration) keepalive.ServerParameters {
	p := keepalive.ServerParameters{Time: c.PingInterval, Timeout: c.PingTimeout}
	if idle > 0 {
		p.MaxConnectionIdle = idle
	}
	return p
}

func enforcementPolicy() keepalive.EnforcementPolicy {
	return keepalive.EnforcementPolicy{MinTime: AgentKeepaliveMinTime, PermitWithoutStream: false}
}
