// Command tether-gateway serves the Tether HTTP/JSON API (/v1/devices...,
// /openapi.json, /healthz, /readyz) in front of one or more tether-server
// replicas, translating to their gRPC DeviceService. With --metrics it also
// serves Prometheus metrics on a separate address. See docs/GATEWAY.md.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tetherhq/tether/gateway"
	"github.com/tetherhq/tether/internal/envflag"
	"github.com/tetherhq/tether/internal/logging"
	"github.com/tetherhq/tether/internal/version"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "tether-gateway:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("tether-gateway", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8080", "HTTP listen address")
	servers := fs.String("server", "127.0.0.1:7070", "tether-server gRPC address; several, comma-separated, are load-balanced with health checks")
	corsOrigins := fs.String("cors-origins", "", `comma-separated browser origins allowed cross-origin (https://console.example.com), or "*"; empty = no CORS`)
	metricsAddr := fs.String("metrics", "", "serve Prometheus /metrics on this address (e.g. 127.0.0.1:9091); empty = off")
	maxBody := fs.Int64("max-body", gateway.DefaultMaxBodyBytes, "maximum request body size in bytes")
	watchConns := fs.Int("watch-conns", gateway.DefaultWatchConns, "gRPC connections per server set for watch streams, separate from the one for unary calls")
	maxWatches := fs.Int("max-watches", 0, "watch streams this gateway serves; more get 429 (0 = watch-conns x 32, what servers accept on those connections by default)")
	requireAuth := fs.Bool("require-auth", false, "refuse /v1 requests without an Authorization header (401) before reading their body; set when the servers have API keys")
	maxBodyReads := fs.Int("max-body-reads", gateway.DefaultMaxBodyReads, "request bodies read at once; more wait up to 1s, then get 429")
	readHeaderTimeout := fs.Duration("read-header-timeout", gateway.DefaultReadHeaderTimeout, "time to read a request's headers")
	idleTimeout := fs.Duration("idle-timeout", gateway.DefaultIdleTimeout, "close keep-alive connections idle this long")
	maxHeaderBytes := fs.Int("max-header-bytes", gateway.DefaultMaxHeaderBytes, "largest request header block in bytes")
	serverCA := fs.String("server-ca", "", "PEM CA bundle to verify tether-server's TLS certificate; empty = plaintext gRPC (dev mode)")
	serverName := fs.String("server-name", "", "name to verify in tether-server's certificate (default: the host of --server)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: tether-gateway [flags]\n\nEvery flag can also be set with an environment variable TETHER_<FLAG> (e.g. TETHER_LISTEN, TETHER_SERVER, TETHER_CORS_ORIGINS).\n\n")
		fs.PrintDefaults()
	}
	if err := envflag.Parse(fs, "TETHER", args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *showVersion {
		fmt.Println("tether-gateway", version.String())
		return nil
	}
	log, err := logging.New(os.Stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var metrics *gateway.Metrics
	if *metricsAddr != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		metrics = gateway.NewMetrics(reg)
		stopMetrics, err := serveMetrics(ctx, *metricsAddr, reg, log)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	var dial []grpc.DialOption
	if *serverCA != "" {
		pem, err := os.ReadFile(*serverCA)
		if err != nil {
			return fmt.Errorf("--server-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--server-ca %s: no PEM certificates in it", *serverCA)
		}
		dial = append(dial, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: *serverName, MinVersion: tls.VersionTLS12})))
	}
	gw, err := gateway.New(ctx, gateway.Config{
		DialOptions:        dial,
		Servers:            splitList(*servers),
		CORSAllowedOrigins: splitList(*corsOrigins),
		MaxBodyBytes:       *maxBody,
		WatchConns:         *watchConns,
		MaxWatches:         *maxWatches,
		RequireCredentials: *requireAuth,
		MaxBodyReads:       *maxBodyReads,
		ReadHeaderTimeout:  *readHeaderTimeout,
		IdleTimeout:        *idleTimeout,
		MaxHeaderBytes:     *maxHeaderBytes,
		Logger:             log,
		Metrics:            metrics,
	})
	if err != nil {
		return err
	}
	defer gw.Close()
	log.Info("tether-gateway starting", "listen", *listen, "servers", *servers, "metrics", *metricsAddr, "version", version.String())
	return gw.Run(ctx, *listen)
}

// serveMetrics serves reg on addr at /metrics until the returned function is
// called (after the gateway's own drain, so the drain can be scraped).
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, log *slog.Logger) (stop func(), err error) {
	ln, err := new(net.ListenConfig).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server failed", "addr", addr, "err", err)
		}
	}()
	log.Info("metrics serving", "addr", ln.Addr().String())
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			_ = srv.Close()
		}
	}, nil
}

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
