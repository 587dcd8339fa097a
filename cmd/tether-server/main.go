// Command tether-server runs one Tether replica: it holds agent streams,
// serves the fleet API over gRPC (and JSON with --http), and mirrors the
// session registry to Redis (--redis) or keeps it in memory.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/tetherhq/tether/gateway"
	"github.com/tetherhq/tether/internal/envflag"
	"github.com/tetherhq/tether/internal/logging"
	"github.com/tetherhq/tether/internal/version"
	"github.com/tetherhq/tether/server"
	"github.com/tetherhq/tether/server/proxyproto"
	"github.com/tetherhq/tether/server/registry"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "tether-server:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "token":
			return tokenCommand(args[1:], os.Stdout, os.Stderr)
		case "apikey":
			return apikeyCommand(args[1:], os.Stdin, os.Stdout)
		case "tls":
			return tlsCommand(args[1:], os.Stdout, os.Stderr)
		}
	}
	fs := flag.NewFlagSet("tether-server", flag.ContinueOnError)
	var cfg server.Config
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:7070", "gRPC listen address (agents, DeviceService, health, reflection)")
	fs.StringVar(&cfg.HTTP, "http", "", "serve the JSON gateway in-process on this address (e.g. 127.0.0.1:8080)")
	fs.StringVar(&cfg.Metrics, "metrics", "", "serve /metrics, /healthz and /readyz on this address (e.g. 127.0.0.1:7075; off loopback: HTTPS with TLS on, else only with --insecure); empty = off")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "also serve /debug/pprof/ on the --metrics listener (heap, goroutine stacks: keep it loopback)")
	fs.StringVar(&cfg.Advertise, "advertise", "", "address peers use to reach this replica (default: the listen address)")
	fs.StringVar(&cfg.RedisURL, "redis", "", "Redis URL for the registry (redis://host:6379/0); empty = embedded in-memory store")
	fs.StringVar(&cfg.Session.Node, "node", "", "node name of this replica (default: hostname-port)")
	fs.DurationVar(&cfg.Session.PingInterval, "ping-interval", 10*time.Second, "application Ping interval, also the HTTP/2 keepalive time")
	fs.DurationVar(&cfg.Session.PingTimeout, "ping-timeout", 5*time.Second, "how long a Ping may go unanswered, also the HTTP/2 keepalive timeout")
	fs.DurationVar(&cfg.Session.HelloTimeout, "hello-timeout", 5*time.Second, "how long a new stream may take to send Hello")
	fs.DurationVar(&cfg.Session.NodeTTL, "lease-ttl", 15*time.Second, "how long a crashed replica's sessions keep reading as online")
	fs.DurationVar(&cfg.Session.MirrorInterval, "mirror-interval", 120*time.Second, "how often last-seen times are written to the registry (batched)")
	fs.DurationVar(&cfg.Session.StoreTimeout, "store-timeout", 5*time.Second, "bound on one registry call made for a session; a later reply is an unknown outcome, resolved by retry and reconciliation")
	fs.DurationVar(&cfg.Session.ReconcileInterval, "reconcile-interval", 10*time.Second, "how often the replica proves the registry matches the sessions it holds (a phantom reads offline within about this long)")
	fs.IntVar(&cfg.Session.MaxPendingHellos, "max-pending-hellos", 1024, "Hellos in flight (before their session is installed) beyond which new ones are shed with Close(OVERLOADED) + retry_after; negative = no cap")
	fs.DurationVar(&cfg.Session.ShedSchedLatency, "shed-sched-latency", 0, "if set, also shed new Hellos while the Go scheduler's p99 latency is above this (the replica is saturated; e.g. 150ms on a dedicated host); 0 = off")
	fs.DurationVar(&cfg.Session.ShedRetryAfter, "shed-retry-after", 5*time.Second, "retry_after told to a shed Hello (jittered to 0.5-1.5x)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 10*time.Second, "bound on graceful shutdown")
	fs.IntVar(&cfg.CommandOutputCap, "command-output-cap", 64<<10, "command output relayed to callers is cut at this many bytes (and flagged)")
	fs.IntVar(&cfg.Session.MaxInflightCommands, "max-inflight-commands", 64, "commands in flight per session; more answer RESOURCE_EXHAUSTED")
	fs.DurationVar(&cfg.DeviceRetention, "device-retention", 7*24*time.Hour, "how long an offline device stays known in the registry")
	fs.DurationVar(&cfg.Fleet.NeverConnectedRetention, "never-connected-retention", registry.DefaultNeverConnectedRetention, "how long a pre-registered device that never connected stays known")
	fs.DurationVar(&cfg.Fleet.HistoryRetention, "history-retention", registry.DefaultHistoryRetention, "how long a device's session history is kept after its last session ended")
	fs.IntVar(&cfg.Fleet.HistoryLen, "history-length", registry.DefaultHistoryLen, fmt.Sprintf("ended sessions kept per device (1-%d)", registry.MaxHistoryLen))
	fs.StringVar(&cfg.Security.TLSCert, "tls-cert", "", "server certificate (PEM); with --tls-key turns TLS on for gRPC and --http (re-read when the file changes)")
	fs.StringVar(&cfg.Security.TLSKey, "tls-key", "", "server private key (PEM)")
	fs.StringVar(&cfg.Security.ClientCA, "client-ca", "", "CA bundle (PEM) that verifies client certificates: devices (URI SAN tether://device/<id>; the CN only with --cert-cn-device) and replicas (tether://peer/<node>)")
	fs.StringVar(&cfg.Security.PeerCA, "peer-ca", "", "CA bundle (PEM) that verifies other replicas' server certificates (default: --client-ca, else the system roots)")
	tokenSecretFile := fs.String("token-secret-file", "", "file with the secret (>= 32 bytes) that signs device tokens (a bare name is looked up in $CREDENTIALS_DIRECTORY, as are the other secret files and --tls-cert/--tls-key); set = agents must present a token or a client certificate")
	apiKeysFile := fs.String("api-keys-file", "", "API keys, hashed (lines \"sha256:<hex> <role> <name>\" or YAML); set = DeviceService, reflection and admin calls need a key")
	apiKeys := fs.String("api-keys", "", "API keys inline, same line format, ';'-separated (usually from TETHER_API_KEYS)")
	clusterSecretFile := fs.String("cluster-secret-file", "", "file with the secret (>= 32 bytes) replicas prove to each other on PeerService (the same on every replica)")
	fs.DurationVar(&cfg.AuditStreamRetention, "audit-stream-retention", 0, "also append the audit lines to the Redis stream tether:audit and keep them this long (e.g. 720h; needs --redis; 0 = log only)")
	fs.BoolVar(&cfg.Security.CertCN, "cert-cn-device", false, "accept a client certificate's subject CN as its device id when it has no tether://device/<id> URI SAN (legacy; off: only the URI SAN names a device)")
	peerNodes := fs.String("peer-nodes", "", "comma-separated node names accepted from peer certificates and cluster proofs besides the registry's live nodes")
	fs.BoolVar(&cfg.Security.Insecure, "insecure", false, "allow plaintext gRPC/HTTP on a non-loopback address (without TLS the server otherwise binds loopback only)")
	fs.Float64Var(&cfg.Security.HelloRate, "hello-rate", 20, "new agent streams per second per source IP (token bucket; negative = unlimited); excess gets RESOURCE_EXHAUSTED")
	fs.IntVar(&cfg.Security.HelloBurst, "hello-burst", 40, "burst of new agent streams per source IP")
	fs.BoolVar(&cfg.Security.RateLimitLoopback, "hello-rate-loopback", false, "apply --hello-rate to loopback sources too (exempt by default: a local proxy puts every client in one bucket)")
	fs.IntVar(&cfg.Session.FlapLimit, "flap-limit", 10, "takeovers of one device id per minute tolerated before it is put in a cooldown")
	fs.DurationVar(&cfg.Session.FlapCooldown, "flap-cooldown", time.Minute, "how long a flapping device id's Hellos are refused (Close FLAPPING with retry_after)")
	proxyFrom := fs.String("proxy-protocol-from", "", "comma-separated networks (CIDR) of L4 load balancers whose connections to --listen start with a PROXY protocol v2 header naming the client; empty = off (docs/ADMIN.md)")
	limitFlags(fs, &cfg.Limits)
	jobFlags(fs, &cfg.Jobs)
	httpMaxBody := fs.Int64("http-max-body", gateway.DefaultMaxBodyBytes, "--http: maximum request body size in bytes")
	httpWatchWriteTimeout := fs.Duration("http-watch-write-timeout", gateway.DefaultWatchWriteTimeout, "--http: disconnect a watch client that has read nothing for this long")
	gcPercent := fs.Int("gc-percent", defaultGCPercent, "Go GC target: heap growth between collections, in percent of the live heap (lower trades CPU for memory per session); the GOGC environment variable, when set, wins")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: tether-server [flags]\n"+
			"       tether-server token issue <device-id> [--ttl 8760h] --token-secret-file F\n"+
			"       tether-server token revoke <token|token-id> [--until RFC3339] --redis URL\n"+
			"       tether-server apikey hash --role viewer|operator|admin --name NAME   (reads the key on stdin)\n"+
			"       tether-server tls ca | tls server --dns NAME --ip IP | tls device <device-id>   (certificates; see docs/SECURITY.md)\n\n"+
			"Every flag can also be set with an environment variable TETHER_<FLAG> (e.g. TETHER_LISTEN, TETHER_REDIS,\n"+
			"TETHER_TLS_CERT, TETHER_API_KEYS). Without --tls-cert the server listens on loopback only unless --insecure.\n"+
			"See docs/SECURITY.md.\n\n")
		fs.PrintDefaults()
	}
	err := envflag.Parse(fs, "TETHER", args)
	if err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (see --help)", fs.Args())
	}
	for _, f := range postParse {
		f()
	}
	if *showVersion {
		fmt.Println("tether-server", version.String())
		return nil
	}
	if err := validate(fs); err != nil {
		return err
	}
	setGCPercent(*gcPercent)
	if cfg.ProxyProtocolFrom, err = proxyproto.ParsePrefixes(*proxyFrom); err != nil {
		return fmt.Errorf("%s: %w", envflag.Source(fs, "proxy-protocol-from"), err)
	}
	for _, n := range strings.Split(*peerNodes, ",") {
		if n = strings.TrimSpace(n); n != "" {
			cfg.Security.PeerNodes = append(cfg.Security.PeerNodes, n)
		}
	}
	warnings, err := loadSecrets(&cfg.Security, secretFlags{*tokenSecretFile, *apiKeysFile, *apiKeys, *clusterSecretFile})
	if err != nil {
		return err
	}
	log, err := logging.New(os.Stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		log.Warn(w)
	}
	slog.SetDefault(log)
	cfg.Logger = log
	cfg.Version = version.String()
	// One registry for the replica and its in-process gateway (--http).
	cfg.Registry = prometheus.NewRegistry()
	cfg.GatewayHandler = func(ctx context.Context, unary, streams *grpc.ClientConn, local server.LocalWatch) (http.Handler, error) {
		return gateway.NewHandler(ctx, unary, gateway.Config{Logger: log, Metrics: gateway.NewMetrics(cfg.Registry),
			StreamConn: streams, LocalWatch: local, RequireCredentials: cfg.Security.APIKeys.Len() > 0, MaxBodyBytes: *httpMaxBody,
			WatchWriteTimeout: *httpWatchWriteTimeout})
	}

	logEffective(log, fs)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	srv, err := server.New(ctx, cfg)
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}

// validate refuses, with one line each, the flag values that would
// otherwise fail later or be silently replaced by a default: unknown
// TETHER_* variables, bad addresses, zero or negative durations, bad log
// settings.
func validate(fs *flag.FlagSet) error {
	if err := envflag.CheckEnv(fs, "TETHER"); err != nil {
		return err
	}
	if err := envflag.HostPort(fs, "listen", "http", "metrics", "advertise"); err != nil {
		return err
	}
	if err := envflag.Positive(fs, "ping-interval", "ping-timeout", "hello-timeout", "lease-ttl",
		"mirror-interval", "drain-timeout", "device-retention", "flap-cooldown", "job-retention", "job-lease-ttl",
		"never-connected-retention", "history-retention", "http-watch-write-timeout", "watch-send-timeout"); err != nil {
		return err
	}
	if err := checkJobFlags(fs); err != nil {
		return err
	}
	if v := fs.Lookup("history-length").Value.(flag.Getter).Get().(int); v < 1 || v > registry.MaxHistoryLen {
		return fmt.Errorf("%s: want 1 to %d", envflag.Source(fs, "history-length"), registry.MaxHistoryLen)
	}
	for _, n := range []string{"command-output-cap", "max-inflight-commands", "flap-limit", "gc-percent"} {
		if v := fs.Lookup(n).Value.(flag.Getter).Get().(int); v <= 0 {
			return fmt.Errorf("%s: must be a positive number", envflag.Source(fs, n))
		}
	}
	if v := fs.Lookup("hello-burst").Value.(flag.Getter).Get().(int); v < 1 {
		return fmt.Errorf("%s: must be at least 1", envflag.Source(fs, "hello-burst"))
	}
	return logging.Check(fs.Lookup("log-format").Value.String(), fs.Lookup("log-level").Value.String())
}

// logEffective logs the configuration the replica runs with, once, after
// flags, environment and defaults were combined. Secrets are never logged:
// for secret flags only whether they are set.
func logEffective(log *slog.Logger, fs *flag.FlagSet) {
	var attrs []any
	fs.VisitAll(func(f *flag.Flag) {
		key := strings.ReplaceAll(f.Name, "-", "_")
		switch f.Name {
		case "version", "help", "h":
			return
		case "api-keys":
			attrs = append(attrs, slog.Bool(key, f.Value.String() != ""))
			return
		}
		if g, ok := f.Value.(flag.Getter); ok {
			attrs = append(attrs, slog.Any(key, g.Get()))
			return
		}
		attrs = append(attrs, slog.String(key, f.Value.String()))
	})
	log.Info("effective configuration", attrs...)
}

// defaultGCPercent is tether-server's GC target: Go's own default. Lower
// values keep a replica's heap closer to its live size (mostly long-lived
// session state) at the price of more collections, each of which scans every
// session's goroutine stacks; measured in docs/PERFORMANCE.md ("Floors and
// ratios", attempt 8): 50 cost command throughput for little memory.
const defaultGCPercent = 100

// setGCPercent applies --gc-percent unless the operator set GOGC, which the
// Go runtime has already applied.
func setGCPercent(p int) {
	if _, ok := os.LookupEnv("GOGC"); ok {
		return
	}
	debug.SetGCPercent(p)
}
