package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/test/bufconn"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/access"
	"github.com/tetherhq/tether/server/adminapi"
	"github.com/tetherhq/tether/server/deviceapi"
	"github.com/tetherhq/tether/server/jobs"
	"github.com/tetherhq/tether/server/metrics"
	"github.com/tetherhq/tether/server/proxyproto"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/router"
	"github.com/tetherhq/tether/server/session"
)

// Config configures a replica. Zero values mean defaults.
type Config struct {
	// Listen is the gRPC address (agents, DeviceService, health,
	// reflection). Default 127.0.0.1:7070.
	Listen string
	// HTTP, if set, serves the JSON gateway in-process on this address.
	HTTP string
	// Metrics, if set, serves /metrics, /healthz and /readyz on this address
	// (HTTPS with the server's certificate when TLS is on and the address
	// is not loopback; plaintext off loopback needs Security.Insecure).
	Metrics string
	// Pprof serves /debug/pprof/ on the Metrics listener (heap, goroutine
	// stacks: operator-only; off by default).
	Pprof bool
	// AuditStreamRetention, if positive, also appends the audit lines to
	// the Redis stream tether:audit, keeping this long (needs RedisURL).
	AuditStreamRetention time.Duration
	// Advertise is the address peers use to reach this replica. Default:
	// the actual gRPC listen address.
	Advertise string
	// RedisURL selects the Redis store; empty means the embedded in-memory
	// store.
	RedisURL string
	// Security configures TLS, authentication and admission limits; the
	// zero value is dev mode (plaintext, loopback only, no authentication).
	Security Security
	// Session holds the node name and every liveness number.
	Session session.Config
	// DrainTimeout bounds graceful shutdown. Default 10s.
	DrainTimeout time.Duration
	// CommandOutputCap bounds the command output relayed to callers.
	// Default 64 KiB.
	CommandOutputCap int
	// DeviceRetention is how long an offline device stays known in the
	// registry. Default 7 days.
	DeviceRetention time.Duration
	// Fleet sizes the fleet views: history length and retentions.
	Fleet FleetRetention
	// Limits bounds what callers can make the replica hold (limits.go).
	Limits Limits
	// Jobs configures JobService and the job runner (served when the
	// store keeps jobs: both built-in stores do).
	Jobs Jobs
	// Logger is the server's logger.
	Logger *slog.Logger
	// ProxyProtocolFrom, if set, are the networks of the L4 balancers in
	// front of the gRPC listener: a connection from them that starts with a
	// PROXY protocol v2 header counts as coming from the client the header
	// names (server/proxyproto). Empty = off: no connection is read for a
	// header.
	ProxyProtocolFrom []netip.Prefix

	// Store, if set, is used instead of one built from RedisURL (tests).
	Store registry.Store
	// Listener, if set, is used instead of listening on Listen (tests).
	Listener net.Listener
	// Registry receives the metrics; default a new registry.
	Registry *prometheus.Registry
	// GatewayHandler builds the in-process JSON gateway from two in-memory
	// connections to this server, one for unary calls and one for watch
	// streams (so that no number of watches can delay a unary call); set by
	// the command (keeps this package free of the gateway's dependencies in
	// tests that do not need it).
	// local serves the gateway's HTTP watches straight from this replica's
	// event feed (see LocalWatch).
	GatewayHandler func(ctx context.Context, unary, streams *grpc.ClientConn, local LocalWatch) (http.Handler, error)
	// Version is reported in logs.
	Version string
}

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:7070"
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	c.Session.Logger = c.Logger
	c.Limits.setDefaults()
}

// DefaultNode derives a node name from the host name and listen port,
// restricted to [A-Za-z0-9._-].
func DefaultNode(listen string) string {
	host, _ := os.Hostname()
	_, port, _ := net.SplitHostPort(listen)
	name := host + "-" + port
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '-'
	}, name)
}

// Server is one Tether replica.
type Server struct {
	cfg     Config
	lis     net.Listener
	store   registry.Store
	hub     *session.Hub
	api     *deviceapi.Service
	router  *router.Router
	jobs    *jobs.Runner // nil when the store keeps no jobs
	peers   *router.Peers
	grpc    *grpc.Server
	inner   *grpc.Server // serves the in-process gateway over memory (no stream cap)
	health  *health.Server
	metrics *metrics.Metrics
	sec     *security
	log     *slog.Logger
	perIP   *prometheus.CounterVec

	mu       sync.Mutex
	draining bool
}

// New builds a replica and opens its gRPC listener (so that Addr is known
// before Run).
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.checkSecurity(); err != nil {
		return nil, err
	}
	if mi := cfg.Session.WithDefaults().MirrorInterval; cfg.DeviceRetention > 0 && cfg.DeviceRetention < mi {
		return nil, fmt.Errorf("--device-retention %v is shorter than --mirror-interval %v: live devices' records would expire between two mirror writes; use a retention of at least the mirror interval", cfg.DeviceRetention, mi)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, perIP: newPerIPRefused(cfg.Registry)}
	lis := cfg.Listener
	if lis == nil {
		var err error
		lis, err = net.Listen("tcp", cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
		}
	}
	if len(cfg.ProxyProtocolFrom) > 0 {
		// (The per-IP connection cap counts the address a connection
		// comes from: behind a PROXY-protocol balancer, the balancer's.)
		lis = &proxyproto.Listener{Listener: lis, Trusted: cfg.ProxyProtocolFrom, Logger: cfg.Logger}
	}
	s.lis = limitPerIP(lis, cfg.Limits.MaxConnsPerIP, s.perIP.WithLabelValues("grpc"))
	if s.cfg.Advertise == "" {
		s.cfg.Advertise = lis.Addr().String()
	}
	if s.cfg.Session.Node == "" {
		s.cfg.Session.Node = DefaultNode(lis.Addr().String())
	}
	store := cfg.Store
	if store == nil {
		var err error
		store, err = openStore(ctx, cfg)
		if err != nil {
			lis.Close()
			return nil, err
		}
	}
	s.store = store
	sec, err := s.cfg.buildSecurity(store, cfg.Logger)
	if err != nil {
		lis.Close()
		return nil, err
	}
	s.sec = sec
	peerOpts, err := sec.peerDialOptions(cfg.Security, s.cfg.Session.Node)
	if err != nil {
		lis.Close()
		return nil, err
	}
	s.metrics = metrics.New(cfg.Registry)
	cfg.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if c, ok := store.(interface{ CommandsSent() uint64 }); ok {
		cfg.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tether_redis_commands_total",
			Help: "Commands this replica sent to Redis (a pipeline of N counts N; the commands its scripts run inside Redis are not counted).",
		}, func() float64 { return float64(c.CommandsSent()) }))
	}
	hub, err := session.NewHub(s.cfg.Session, store, s.metrics)
	if err != nil {
		lis.Close()
		return nil, err
	}
	s.hub = hub
	s.peers = router.NewPeers(peerOpts...)
	s.router = router.New(router.Config{Hub: hub, Registry: store, Peers: s.peers, OutputCap: cfg.CommandOutputCap, Metrics: s.metrics, Logger: cfg.Logger})
	s.api = deviceapi.New(deviceapi.Config{Logger: cfg.Logger, Router: s.router,
		MaxPageBytes: cfg.Limits.MaxPageBytes, MaxWatchers: cfg.Limits.MaxWatchers, MaxWatchersPerKey: cfg.Limits.MaxWatchersPerKey,
		MaxSnapshotReads: cfg.Limits.MaxSnapshotReads, WatchBuffer: cfg.Limits.WatchBuffer, KeyName: sec.keyName,
		WatchSendTimeout: cfg.Limits.WatchSendTimeout,
	}, store, hub, s.metrics)
	if err := s.api.RegisterMetrics(cfg.Registry); err != nil {
		lis.Close()
		return nil, err
	}
	if p, ok := store.(poolStatser); ok {
		cfg.Registry.MustRegister(poolCollector{p})
	}

	sc := hub.Config()
	gm := metrics.NewGRPC(cfg.Registry)
	s.grpc = grpc.NewServer(
		grpc.ChainUnaryInterceptor(gm.Unary, sec.policy.Unary, sec.audit.Unary),
		grpc.ChainStreamInterceptor(gm.Stream, sec.policy.Stream),
		grpc.Creds(session.TrackConns(sec.creds)),
		grpc.KeepaliveParams(serverKeepalive(sc, cfg.Limits.IdleConnTimeout)),
		grpc.KeepaliveEnforcementPolicy(enforcementPolicy()),
		grpc.MaxRecvMsgSize(1<<20),
		// Header lists are read before any authentication.
		grpc.MaxHeaderListSize(cfg.Limits.MaxHeaderListSize),
		// Agents send small messages; grpc-go's 32 KiB per-connection read
		// buffer was the largest single item of a held session's memory
		// (8 KiB, then 2 KiB: a Pong is under 100 bytes, and a larger
		// frame is read straight into its message).
		grpc.ReadBufferSize(2<<10),
		grpc.WriteBufferSize(8<<10),
		// Everything this server receives is small (agent messages,
		// unary requests): a static 64 KiB receive window (grpc-go's
		// initial one) turns off the BDP estimator, which otherwise
		// answers nearly every Pong with an extra HTTP/2 PING to measure
		// bandwidth — one more write and one more read per cycle.
		grpc.StaticStreamWindowSize(64<<10),
		grpc.StaticConnWindowSize(64<<10),
		// The write buffer is taken from a pool for each flush and given
		// back after, instead of held by every idle connection.
		grpc.SharedWriteBuffer(true),
		grpc.MaxConcurrentStreams(cfg.Limits.MaxStreamsPerConn),
		grpc.ConnectionTimeout(5*time.Second),
	)
	tetherv1.RegisterAgentServiceServer(s.grpc, hub)
	tetherv1.RegisterDeviceServiceServer(s.grpc, s.api)
	tetherv1.RegisterPeerServiceServer(s.grpc, s.router.PeerServer())
	jobSvc := s.newJobs(store, sec)
	if jobSvc != nil {
		tetherv1.RegisterJobServiceServer(s.grpc, jobSvc)
	}
	if rev, ok := store.(registry.Revocations); ok {
		tetherv1.RegisterAdminServiceServer(s.grpc, adminapi.New(rev))
	}
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	access.RegisterReflection(s.grpc)
	gm.Initialize(s.grpc)
	metrics.NewBuildInfo(cfg.Registry)

	// The in-process gateway's server: the same API and policy over an
	// in-memory listener, without the per-connection stream cap (it carries
	// every HTTP watch of this replica; the watch caps bound those).
	s.inner = grpc.NewServer(
		grpc.ChainUnaryInterceptor(gm.Unary, sec.policy.Unary, sec.audit.Unary),
		grpc.ChainStreamInterceptor(gm.Stream, sec.policy.Stream),
		grpc.MaxRecvMsgSize(1<<20),
	)
	tetherv1.RegisterDeviceServiceServer(s.inner, s.api)
	if jobSvc != nil {
		tetherv1.RegisterJobServiceServer(s.inner, jobSvc)
	}
	healthpb.RegisterHealthServer(s.inner, s.health)
	return s, nil
}

// LocalWatch serves one WatchDevices stream of the in-process gateway without
// a gRPC stream in between: md is the call's metadata as the gateway would
// have sent it (authorization, x-request-id), and send gets every message
// (deviceapi.LocalSend). Authorization, limits and errors are those of the
// gRPC call; each event of the replica's feed is encoded once for all such
// watchers instead of once per watcher.
type LocalWatch = func(ctx context.Context, md metadata.MD, req *tetherv1.WatchDevicesRequest, send deviceapi.LocalSend,
	encode deviceapi.LocalEncode, write deviceapi.LocalWrite) error

func (s *Server) localWatch(ctx context.Context, md metadata.MD, req *tetherv1.WatchDevicesRequest, send deviceapi.LocalSend,
	encode deviceapi.LocalEncode, write deviceapi.LocalWrite) error {
	ctx, err := s.sec.policy.AuthorizeStream(metadata.NewIncomingContext(ctx, md), tetherv1.DeviceService_WatchDevices_FullMethodName)
	if err != nil {
		return err
	}
	return s.api.WatchLocal(ctx, req, send, encode, write)
}

// Addr is the gRPC listen address.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Node is the replica's node name.
func (s *Server) Node() string { return s.hub.Config().Node }

// Hub exposes the session hub (tests, peers).
func (s *Server) Hub() *session.Hub { return s.hub }

// Store exposes the registry store.
func (s *Server) Store() registry.Store { return s.store }

var services = []string{"", tetherv1.AgentService_ServiceDesc.ServiceName, tetherv1.DeviceService_ServiceDesc.ServiceName}

func (s *Server) setServing(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	for _, name := range services {
		s.health.SetServingStatus(name, st)
	}
}

// Ready reports whether the replica accepts work: not draining and the
// registry reachable.
func (s *Server) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.draining && s.hub.StoreHealthy()
}

// Run serves until ctx ends, then drains: health goes NOT_SERVING, every
// session gets Close(draining) and records its end, the gRPC server stops
// (GracefulStop bounded by DrainTimeout, then Stop), and the node's liveness
// is dropped from the registry. It returns nil after a clean drain.
func (s *Server) Run(ctx context.Context) error {
	log := s.log.With("node", s.Node())
	runCtx, stopLoops := context.WithCancel(context.Background())
	defer stopLoops()

	if !s.hub.Register(runCtx, s.cfg.Advertise) {
		log.Warn("registry unreachable at start; serving anyway and retrying")
	}
	s.setServing(s.Ready())

	var loops sync.WaitGroup
	loops.Add(2)
	go func() { defer loops.Done(); s.hub.Mirror(runCtx, s.cfg.Advertise) }()
	go func() { defer loops.Done(); s.watchHealth(runCtx) }()
	// The job runner stops first when the replica drains (its jobs are
	// handed over while the registry is still reachable).
	jobsCtx, stopJobs := context.WithCancel(runCtx)
	defer stopJobs()
	jobsDone := make(chan struct{})
	if s.jobs != nil {
		go func() { defer close(jobsDone); s.jobs.Run(jobsCtx) }()
	} else {
		close(jobsDone)
	}
	if rev := s.sec.policy.Revocations; rev != nil {
		loops.Add(1)
		go func() { defer loops.Done(); s.hub.WatchRevocations(runCtx, rev) }()
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- s.grpc.Serve(s.lis) }()

	var https []*http.Server
	if s.cfg.HTTP != "" && s.cfg.GatewayHandler != nil {
		mem := bufconn.Listen(256 << 10)
		go func() { _ = s.inner.Serve(mem) }()
		dial := func() (*grpc.ClientConn, error) {
			return grpc.NewClient("passthrough:///in-process",
				grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return mem.DialContext(ctx) }),
				grpc.WithTransportCredentials(insecure.NewCredentials()))
		}
		unary, err := dial()
		if err != nil {
			return fmt.Errorf("gateway client: %w", err)
		}
		defer unary.Close()
		streams, err := dial()
		if err != nil {
			return fmt.Errorf("gateway client: %w", err)
		}
		defer streams.Close()
		h, err := s.cfg.GatewayHandler(runCtx, unary, streams, s.localWatch)
		if err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
		hs, err := s.serveHTTP(s.cfg.HTTP, h, s.sec.httpTLS())
		if err != nil {
			return err
		}
		https = append(https, hs)
	}
	if s.cfg.Metrics != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{}))
		if s.cfg.Pprof {
			// Profiling, only when asked for (--pprof): heap and goroutine
			// stacks are for operators.
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
			if !s.Ready() {
				http.Error(w, "not ready", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ready")
		})
		var metricsTLS *tls.Config
		if !isLoopback(s.cfg.Metrics) {
			metricsTLS = s.sec.httpTLS() // nil without TLS (then --insecure allowed it)
		}
		hs, err := s.serveHTTP(s.cfg.Metrics, mux, metricsTLS)
		if err != nil {
			return err
		}
		https = append(https, hs)
	}
	log.Info("tether server started", "listen", s.lis.Addr().String(), "advertise", s.cfg.Advertise, "http", s.cfg.HTTP,
		"metrics", s.cfg.Metrics, "pprof", s.cfg.Pprof, "store", storeKind(s.cfg), "version", s.cfg.Version,
		"tls", s.sec.tls != nil, "mtls", s.cfg.Security.ClientCA != "", "device_tokens", len(s.cfg.Security.TokenSecret) > 0,
		"api_keys", s.cfg.Security.APIKeys.Len(), "cluster_secret", len(s.cfg.Security.ClusterSecret) > 0)

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		log.Error("grpc server failed", "err", err)
	}
	stopJobs()
	<-jobsDone
	s.shutdown(log, https)
	stopLoops()
	loops.Wait()
	return err
}

func (s *Server) serveHTTP(addr string, h http.Handler, tlsCfg *tls.Config) (*http.Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	lis = limitPerIP(lis, s.cfg.Limits.MaxConnsPerIP, s.perIP.WithLabelValues("http"))
	l := s.cfg.Limits
	// No WriteTimeout: a watch stream is a response that lasts as long as
	// the client wants it.
	hs := &http.Server{Handler: h, TLSConfig: tlsCfg, ReadHeaderTimeout: l.HTTPReadHeaderTimeout,
		IdleTimeout: l.HTTPIdleTimeout, MaxHeaderBytes: l.HTTPMaxHeaderBytes}
	go func() {
		var err error
		if tlsCfg != nil {
			err = hs.ServeTLS(lis, "", "")
		} else {
			err = hs.Serve(lis)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server failed", "addr", addr, "err", err)
		}
	}()
	return hs, nil
}

func (s *Server) shutdown(log *slog.Logger, https []*http.Server) {
	start := time.Now()
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	s.setServing(false)
	held := s.hub.Len()
	log.Info("draining", "sessions", held, "timeout", s.cfg.DrainTimeout)

	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	left := s.hub.Drain(ctx)
	s.api.Close()
	for _, hs := range https {
		_ = hs.Shutdown(ctx)
	}
	s.inner.Stop()
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-ctx.Done():
		s.grpc.Stop()
		<-stopped
	}
	s.peers.Close()
	if err := s.sec.stream.Close(); err != nil {
		log.Warn("closing the audit stream", "err", err)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer dcancel()
	if err := s.store.DropNode(dctx, s.Node()); err != nil {
		log.Warn("could not drop node liveness; the registry will expire it", "err", err)
	}
	if err := s.store.Close(); err != nil {
		log.Warn("closing store", "err", err)
	}
	log.Info("drained", "sessions", held, "not_drained", left, "took", time.Since(start).Round(time.Millisecond))
}

func (s *Server) watchHealth(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	last := s.Ready()
	for {
		if ok := s.Ready(); ok != last {
			s.setServing(ok)
			last = ok
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
