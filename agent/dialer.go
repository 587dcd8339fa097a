package agent

import (
	"context"
	"net"
	"os"
	"strings"
	"time"
)

// tcpDialer returns a dialer that sets TCP_USER_TIMEOUT on the socket where
// the platform supports it, or nil when target should keep grpc-go's own
// dialer: non-TCP targets (unix:, passthrough:, ...) and when a proxy is
// configured in the environment (a custom dialer bypasses grpc-go's proxy
// support).
func tcpDialer(target string, userTimeout time.Duration) func(context.Context, string) (net.Conn, error) {
	if strings.Contains(target, "://") || strings.HasPrefix(target, "unix:") || !haveUserTimeout {
		return nil
	}
	for _, k := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"} {
		if os.Getenv(k) != "" {
			return nil
		}
	}
	d := &net.Dialer{Control: userTimeoutControl(userTimeout)}
	return func(ctx context.Context, addr string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	}
}
