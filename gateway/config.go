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
	// DefaultMaxBodyBytes caps request bodies. The largest valid request is
	// a SendCommand with 64 args of 4096 bytes (the server's limits), every
	// byte a control character that JSON escapes as \u00XX (6 bytes), plus
	// 16 KiB for the name, timeout and syntax: 1,589,248 bytes.
	DefaultMaxBodyBytes = 64*4096*6 + 16<<10
	// DefaultMaxBodyReads bounds the request bodies read at once; a request
	// that finds no slot within bodyWait is answered 429.
	DefaultMaxBodyReads = 32
	// DefaultWatchConns is how many gRPC connections New dials for watch
	// streams, separate from the one that carries unary calls.
	DefaultWatchConns = 8
	// DefaultStreamsPerConn is tether-server's default cap on concurrent
	// streams per connection (--max-streams-per-conn).
	DefaultStreamsPerConn = 32
	// Defaults of the HTTP server limits Serve applies.
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxHeaderBytes    = 64 << 10
	// DefaultHealthTimeout bounds the gRPC health check behind /healthz and
	// /readyz. Probes usually time out after 1–5 s; answering 503 first tells
	// the prober more than letting it time out.
	DefaultHealthTimeout = time.Second
	// DefaultShutdownTimeout bounds the graceful drain in Serve. Watch streams
	// are ended at once when the drain starts; this is for unary calls in
	// flight, e.g. a SendCommand waiting on a device.
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultWatchWriteTimeout bounds one write of a watch stream: a client
	// that has read nothing for this long (its socket buffers are full) is
	// disconnected, which frees its watch slot and goroutine.
	DefaultWatchWriteTimeout = 30 * time.Second

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

	// StreamConn, for NewHandler only, carries the watch streams so that
	// they never share a connection (and its stream cap) with unary calls.
	// Nil means the handler's connection.
	StreamConn *grpc.ClientConn

	// LocalWatch, for NewHandler only, serves the watch route in this
	// process instead of over StreamConn (tether-server's in-process
	// gateway): same responses, each event encoded once for every watcher.
	LocalWatch LocalWatch

	// WatchConns, for New only, is how many connections are dialled for
	// watch streams besides the one for unary calls. Zero means
	// DefaultWatchConns.
	WatchConns int

	// MaxWatches caps the watch streams open through this gateway; more
	// are answered 429. Zero means WatchConns × (DefaultStreamsPerConn - 1)
	// for New (what the servers accept on those connections by default,
	// less each connection's health-check stream), no gateway cap for
	// NewHandler (the server's caps apply).
	MaxWatches int

	// RequireCredentials refuses an API request without an Authorization
	// header with 401 before its body is read. Set it when the servers
	// have API keys configured.
	RequireCredentials bool

	// MaxBodyReads bounds the request bodies read at once. Zero means
	// DefaultMaxBodyReads.
	MaxBodyReads int

	// ReadHeaderTimeout, IdleTimeout and MaxHeaderBytes configure the HTTP
	// server of Serve and Run. Zero means the Default values.
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int

	// WatchWriteTimeout bounds each write of a watch stream (and of a
	// taken-over connection's chunks): a client that stops reading is
	// disconnected after it instead of holding its watch forever. Zero
	// means DefaultWatchWriteTimeout.
	WatchWriteTimeout time.Duration

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
	if c.WatchConns < 0 || c.MaxWatches < 0 || c.MaxBodyReads < 0 || c.MaxHeaderBytes < 0 || c.ReadHeaderTimeout < 0 || c.IdleTimeout < 0 {
		errs = append(errs, errors.New("gateway: WatchConns, MaxWatches, MaxBodyReads, MaxHeaderBytes, ReadHeaderTimeout and IdleTimeout must not be negative"))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("gateway: ShutdownTimeout %v: must not be negative", c.ShutdownTimeout))
	}
	if c.WatchWriteTimeout < 0 {
		errs = append(errs, fmt.Errorf("gateway: WatchWriteTimeout %v: must not be negative", c.WatchWriteTimeout))
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
	if c.WatchWriteTimeout == 0 {
		c.WatchWriteTimeout = DefaultWatchWriteTimeout
	}
	if c.MaxBodyReads == 0 {
		c.MaxBodyReads = DefaultMaxBodyReads
	}
	if c.WatchConns == 0 {
		c.WatchConns = DefaultWatchConns
	}
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
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
