package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc"
)

// Defaults for the zero values of Config.
const (
	// DefaultMaxBodyBytes caps request bodies. A SendCommand body is a command
	// name and its argv; 1 MiB is generous for that and small enough to buffer.
	DefaultMaxBodyBytes = 1 << 20
	// DefaultHealthTimeout bounds the gRPC health check behind /healthz and
	// /readyz. Probes usually time out after 1–5 s; answering 503 first tells
	// the prober more than letting it time out.
	DefaultHealthTimeout = time.Second
	// DefaultShutdownTimeout bounds the graceful drain in Serve. Watch streams
	// are ended at once when the drain starts; this is for unary calls in
	// flight, e.g. a SendCommand waiting on a device.
	DefaultShutdownTimeout = 10 * time.Second

	// maxMaxBodyBytes is the largest MaxBodyBytes Validate accepts: bodies are
	// buffered in memory before they are decoded.
	maxMaxBodyBytes = 64 << 20
)

// Config configures a Gateway. The zero value of every field means its
// default; Validate reports fields that cannot be used.
type Config struct {
	// Servers are the Tether servers' gRPC addresses. New needs at least one;
	// NewHandler needs none. A single entry may be any gRPC target
	// ("host:port", "dns:///host:port", "unix:///path"). With several, each
	// must be "host:port": they are handed to a manual resolver and calls are
	// spread over them round-robin, skipping any server that is unreachable or
	// whose gRPC health service does not report SERVING, so the gateway keeps
	// working while one replica restarts.
	Servers []string

	// DialOptions are applied after the gateway's own (plaintext transport
	// credentials, the round_robin service config with client-side health
	// checking and retries of read-only calls), so a
	// grpc.WithTransportCredentials here replaces plaintext. Only New uses
	// them.
	DialOptions []grpc.DialOption

	// CORSAllowedOrigins lists the browser origins ("https://console.example.com")
	// allowed to call the gateway cross-origin. Empty means no CORS headers at
	// all (same-origin use only); "*" alone allows every origin.
	CORSAllowedOrigins []string

	// MaxBodyBytes caps a request body; a larger one is answered 413. Zero means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64

	// HealthTimeout bounds the gRPC health check behind /healthz and /readyz.
	// Zero means DefaultHealthTimeout.
	HealthTimeout time.Duration

	// ShutdownTimeout bounds the graceful drain in Serve and Run; requests
	// still running after it are cut. Zero means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration

	// Logger receives one line per request and the lifecycle lines. Nil means
	// slog.Default().
	Logger *slog.Logger

	// Metrics, if set, records every request (tether_gateway_requests_total,
	// tether_gateway_request_duration_seconds) and the open watch streams
	// (tether_gateway_watchers); see NewMetrics. Nil records nothing.
	Metrics *Metrics
}

// Validate reports every field of c that cannot be used, joined. It does not
// require Servers: New checks that.
func (c Config) Validate() error {
	var errs []error
	seen := make(map[string]bool, len(c.Servers))
	for _, s := range c.Servers {
		switch {
		case strings.TrimSpace(s) == "":
			errs = append(errs, errors.New("gateway: Servers: empty address"))
		case strings.ContainsAny(s, " \t\r\n,"):
			errs = append(errs, fmt.Errorf("gateway: Servers: %q: address contains a space or comma", s))
		case seen[s]:
			errs = append(errs, fmt.Errorf("gateway: Servers: %q listed twice", s))
		case len(c.Servers) > 1:
			if _, port, err := net.SplitHostPort(s); err != nil || port == "" {
				errs = append(errs, fmt.Errorf("gateway: Servers: %q: with several servers each must be host:port", s))
			}
		}
		seen[s] = true
	}
	if _, err := parseOrigins(c.CORSAllowedOrigins); err != nil {
		errs = append(errs, err)
	}
	if c.MaxBodyBytes < 0 || c.MaxBodyBytes > maxMaxBodyBytes {
		errs = append(errs, fmt.Errorf("gateway: MaxBodyBytes %d: must be between 0 (default) and %d", c.MaxBodyBytes, maxMaxBodyBytes))
	}
	if c.HealthTimeout < 0 {
		errs = append(errs, fmt.Errorf("gateway: HealthTimeout %v: must not be negative", c.HealthTimeout))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("gateway: ShutdownTimeout %v: must not be negative", c.ShutdownTimeout))
	}
	return errors.Join(errs...)
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.HealthTimeout == 0 {
		c.HealthTimeout = DefaultHealthTimeout
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// originSet is the parsed CORSAllowedOrigins.
type originSet struct {
	any     bool            // "*": every origin
	origins map[string]bool // lower-case scheme://host[:port]
}

func (o originSet) enabled() bool { return o.any || len(o.origins) > 0 }

func (o originSet) allows(origin string) bool {
	return o.any || o.origins[strings.ToLower(origin)]
}

// parseOrigins checks each origin: "*" alone, or scheme://host[:port] with an
// http or https scheme and nothing after the host.
func parseOrigins(list []string) (originSet, error) {
	set := originSet{origins: make(map[string]bool, len(list))}
	var errs []error
	for _, o := range list {
		if o == "*" {
			if len(list) > 1 {
				errs = append(errs, errors.New(`gateway: CORSAllowedOrigins: "*" must be the only origin`))
			}
			set.any = true
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			errs = append(errs, fmt.Errorf("gateway: CORSAllowedOrigins: %q: want \"*\" or scheme://host[:port]", o))
			continue
		}
		set.origins[strings.ToLower(u.Scheme+"://"+u.Host)] = true
	}
	return set, errors.Join(errs...)
}

// CheckPlaintext refuses to serve plaintext HTTP (no TLS) on a listen
// address that is not loopback unless insecure is set: API keys and
// commands would cross the network in clear. flag names the address in the
// error.
func CheckPlaintext(flag, addr string, tls, insecure bool) error {
	if addr == "" || tls || insecure || isLoopback(addr) {
		return nil
	}
	return fmt.Errorf("refusing to serve plaintext on %s %s, which is not a loopback address: "+
		"give --tls-cert and --tls-key, or --insecure to accept plaintext on a trusted network (see docs/SECURITY.md)", flag, addr)
}

// isLoopback reports whether a listen address binds loopback only.
func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
