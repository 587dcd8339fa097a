package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/health" // registers client-side health checking for healthCheckConfig
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// serviceConfig is the gRPC service config of a connection New dials.
//
//   - round_robin spreads calls over every resolved server (several Servers,
//     or a DNS name with several addresses) and picks only READY ones.
//   - healthCheckConfig makes a server READY only while its grpc.health.v1
//     Watch for the whole server ("") reports SERVING, so a draining replica
//     stops getting new calls before it goes away.
//   - The retry policy covers the read-only calls: a call that hits a replica
//     the instant it dies (no GOAWAY) fails with UNAVAILABLE and is sent again
//     to another one. SendCommand and DisconnectDevice change a device, so
//     they are never retried by the gateway; the client decides.
const serviceConfig = `{
  "loadBalancingConfig": [{"round_robin": {}}],
  "healthCheckConfig": {"serviceName": ""},
  "methodConfig": [{
    "name": [
      {"service": "tether.v1.DeviceService", "method": "ListDevices"},
      {"service": "tether.v1.DeviceService", "method": "GetDevice"},
      {"service": "tether.v1.DeviceService", "method": "WatchDevices"},
      {"service": "tether.v1.DeviceService", "method": "GetDeviceHistory"},
      {"service": "tether.v1.DeviceService", "method": "GetInventory"},
      {"service": "tether.v1.DeviceService", "method": "ListNodes"},
      {"service": "grpc.health.v1.Health", "method": "Check"}
    ],
    "retryPolicy": {
      "maxAttempts": 3,
      "initialBackoff": "0.05s",
      "maxBackoff": "0.5s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}`

// Gateway serves the Tether HTTP/JSON API by calling Tether servers over gRPC.
// Handler is safe for concurrent use; Serve or Run is called at most once.
type Gateway struct {
	cfg     Config // with defaults
	log     *slog.Logger
	origins originSet
	routes  routeTable         // set with handler
	conn    *grpc.ClientConn   // unary calls
	streams []*grpc.ClientConn // watch streams, never conn
	ownConn bool               // conn and streams were dialled by New and are closed by Close

	// watches counts open watch streams against cfg.MaxWatches; bodies
	// bounds the request bodies read at once.
	watches atomic.Int64
	bodies  chan struct{}
	health  grpc_health_v1.HealthClient
	handler http.Handler

	// draining is cancelled when the gateway starts shutting down (Serve's
	// context ended, or Close): open watch streams end and /readyz reports 503.
	draining    context.Context
	stopServing context.CancelFunc

	closeOnce sync.Once
	closeErr  error
}

// New dials cfg.Servers and returns a Gateway that owns the connection. It
// does not wait for a server to be reachable: calls made before one is fail
// with 503, and /readyz tells when one is. ctx is not retained.
func New(ctx context.Context, cfg Config) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(cfg.Servers) == 0 {
		return nil, errors.New("gateway: Servers: at least one server address is required")
	}
	if cfg.LocalWatch != nil {
		return nil, errors.New("gateway: LocalWatch is only for NewHandler")
	}
	target := cfg.Servers[0]
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(serviceConfig),
	}
	if len(cfg.Servers) > 1 {
		r := manual.NewBuilderWithScheme("tether-servers")
		endpoints := make([]resolver.Endpoint, len(cfg.Servers))
		for i, addr := range cfg.Servers {
			endpoints[i] = resolver.Endpoint{Addresses: []resolver.Address{{Addr: addr}}}
		}
		r.InitialState(resolver.State{Endpoints: endpoints})
		opts = append(opts, grpc.WithResolvers(r))
		target = r.Scheme() + ":///servers"
	}
	opts = append(opts, cfg.DialOptions...)
	// One connection for unary calls and WatchConns for watch streams: a
	// server caps the streams of one connection, and a stream waiting for
	// room would otherwise hold up every unary call queued behind it.
	n := cfg.WatchConns
	if n == 0 {
		n = DefaultWatchConns
	}
	if cfg.MaxWatches == 0 {
		// Each connection also carries its health-check Watch stream.
		cfg.MaxWatches = n * (DefaultStreamsPerConn - 1)
	}
	var conns []*grpc.ClientConn
	closeAll := func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}
	for range 1 + n {
		conn, err := grpc.NewClient(target, opts...)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("gateway: dial %s: %w", strings.Join(cfg.Servers, ","), err)
		}
		conn.Connect() // connect now rather than on the first request
		conns = append(conns, conn)
	}
	g, err := newGateway(ctx, conns[0], conns[1:], cfg, true)
	if err != nil {
		closeAll()
		return nil, err
	}
	return g, nil
}

// NewHandler returns the gateway's HTTP handler (see Gateway.Handler) for
// the Tether server behind conn, which the caller owns. tether-server uses it
// to serve the same API in-process over a connection to itself. When ctx ends,
// open watch streams end and /readyz reports 503; the caller's http.Server
// then drains as usual. cfg.Servers and cfg.DialOptions must be empty.
func NewHandler(ctx context.Context, conn *grpc.ClientConn, cfg Config) (http.Handler, error) {
	if conn == nil {
		return nil, errors.New("gateway: NewHandler: nil connection")
	}
	if len(cfg.Servers) > 0 || len(cfg.DialOptions) > 0 || cfg.WatchConns != 0 {
		return nil, errors.New("gateway: NewHandler: Servers, DialOptions and WatchConns are only for New")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	streams := conn
	if cfg.StreamConn != nil {
		streams = cfg.StreamConn
	}
	g, err := newGateway(ctx, conn, []*grpc.ClientConn{streams}, cfg, false)
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, func() { _ = g.Close() })
	return g.Handler(), nil
}

func newGateway(ctx context.Context, conn *grpc.ClientConn, streams []*grpc.ClientConn, cfg Config, ownConn bool) (*Gateway, error) {
	cfg = cfg.withDefaults()
	origins, err := parseOrigins(cfg.CORSAllowedOrigins)
	if err != nil {
		return nil, err // Validate has run; kept for the parsed value
	}
	g := &Gateway{
		cfg:     cfg,
		log:     cfg.Logger,
		origins: origins,
		conn:    conn,
		streams: streams,
		ownConn: ownConn,
		bodies:  make(chan struct{}, cfg.MaxBodyReads),
		health:  grpc_health_v1.NewHealthClient(conn),
	}
	g.draining, g.stopServing = context.WithCancel(context.Background())
	api, err := g.newAPIMux(ctx)
	if err != nil {
		return nil, err
	}
	g.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { g.serveHTTP(w, r, api) })
	return g, nil
}

// Handler returns the gateway's HTTP handler: the /v1 API, /openapi.json,
// /healthz and /readyz. Whoever serves it without Serve should call Close when
// shutting down, which also ends open watch streams.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Close ends open watch streams and, for a Gateway made by New, closes the gRPC
// connection. It is safe to call more than once.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() {
		g.stopServing()
		if g.ownConn {
			errs := []error{g.conn.Close()}
			for _, c := range g.streams {
				errs = append(errs, c.Close())
			}
			g.closeErr = errors.Join(errs...)
		}
	})
	return g.closeErr
}

// Run listens on addr (host:port) and serves until ctx ends; see Serve.
func (g *Gateway) Run(ctx context.Context, addr string) error {
	ln, err := new(net.ListenConfig).Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("gateway: listen: %w", err)
	}
	return g.Serve(ctx, ln)
}

// Serve serves HTTP on ln until ctx ends, then drains: /readyz turns 503, open
// watch streams end with an UNAVAILABLE line (clients resume with
// afterEventId), and other requests get up to Config.ShutdownTimeout to
// finish before they are cut. It returns nil after a drain, or the error that
// stopped serving early. It closes ln but not the gRPC connection (Close).
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler: g.handler,
		// No WriteTimeout: a watch stream is a response that lasts as long
		// as the client wants it.
		ReadHeaderTimeout: g.cfg.ReadHeaderTimeout,
		IdleTimeout:       g.cfg.IdleTimeout,
		MaxHeaderBytes:    g.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	g.log.Info("gateway serving", "addr", ln.Addr().String())

	select {
	case err := <-served:
		return fmt.Errorf("gateway: serve: %w", err)
	case <-ctx.Done():
	}

	g.log.Info("gateway draining", "timeout", g.cfg.ShutdownTimeout)
	g.stopServing()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), g.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		g.log.Warn("gateway drain timed out; closing remaining connections", "error", err)
		_ = srv.Close()
	}
	<-served // http.ErrServerClosed
	g.log.Info("gateway stopped")
	return nil
}

// splitClient sends unary calls over one connection and each watch stream
// over the stream connection with the fewest open watches.
type splitClient struct {
	tetherv1.DeviceServiceClient
	streams []tetherv1.DeviceServiceClient

	mu   sync.Mutex
	open []int // open watches per stream connection
}

func newSplitClient(unary *grpc.ClientConn, streams []*grpc.ClientConn) *splitClient {
	c := &splitClient{DeviceServiceClient: tetherv1.NewDeviceServiceClient(unary), open: make([]int, len(streams))}
	for _, s := range streams {
		c.streams = append(c.streams, tetherv1.NewDeviceServiceClient(s))
	}
	return c
}

// WatchDevices opens the stream on the least used stream connection. The
// stream's context ends when the HTTP request does (grpc-gateway cancels
// it), which releases the count.
func (c *splitClient) WatchDevices(ctx context.Context, in *tetherv1.WatchDevicesRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[tetherv1.WatchDevicesResponse], error) {
	c.mu.Lock()
	best := 0
	for i, n := range c.open {
		if n < c.open[best] {
			best = i
		}
	}
	c.open[best]++
	c.mu.Unlock()
	release := func() {
		c.mu.Lock()
		c.open[best]--
		c.mu.Unlock()
	}
	stop := context.AfterFunc(ctx, release)
	st, err := c.streams[best].WatchDevices(ctx, in, opts...)
	if err != nil {
		if stop() {
			release()
		}
		return nil, err
	}
	return st, nil
}
