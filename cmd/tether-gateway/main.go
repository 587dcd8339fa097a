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
	"github.com/tetherhq/tether/internal/target"
	"github.com/tetherhq/tether/internal/version"
	"github.com/tetherhq/tether/server/access"
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
	metricsAddr := fs.String("metrics", "", "serve Prometheus /metrics on this address (e.g. 127.0.0.1:7076); empty = off")
	maxBody := fs.Int64("max-body", gateway.DefaultMaxBodyBytes, "maximum request body size in bytes")
	watchConns := fs.Int("watch-conns", gateway.DefaultWatchConns, "gRPC connections per server set for watch streams, separate from the one for unary calls")
	maxWatches := fs.Int("max-watches", 0, "watch streams this gateway serves; more get 429 (0 = watch-conns x 32, what servers accept on those connections by default)")
	requireAuth := fs.Bool("require-auth", false, "refuse /v1 requests without an Authorization header (401) before reading their body; set when the servers have API keys")
	maxBodyReads := fs.Int("max-body-reads", gateway.DefaultMaxBodyReads, "request bodies read at once; more wait up to 1s, then get 429")
	readHeaderTimeout := fs.Duration("read-header-timeout", gateway.DefaultReadHeaderTimeout, "time to read a request's headers")
	idleTimeout := fs.Duration("idle-timeout", gateway.DefaultIdleTimeout, "close keep-alive connections idle this long")
	maxHeaderBytes := fs.Int("max-header-bytes", gateway.DefaultMaxHeaderBytes, "largest request header block in bytes")
	watchWriteTimeout := fs.Duration("watch-write-timeout", gateway.DefaultWatchWriteTimeout, "disconnect a watch client that has read nothing for this long")
	serverCA := fs.String("server-ca", "", "PEM CA bundle to verify tether-server's TLS certificate; empty = plaintext gRPC (dev mode)")
	serverName := fs.String("server-name", "", "name to verify in tether-server's certificate (default: the host of --server)")
	tlsCert := fs.String("tls-cert", "", "certificate (PEM) for HTTPS on --listen (and --metrics off loopback); with --tls-key; re-read when the file changes")
	tlsKey := fs.String("tls-key", "", "private key (PEM) for --tls-cert (a bare name is looked up in $CREDENTIALS_DIRECTORY)")
	insecureFlag := fs.Bool("insecure", false, "allow plaintext HTTP on a non-loopback --listen or --metrics (without TLS the gateway otherwise binds loopback only)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: tether-gateway [flags]\n\nEvery flag can also be set with an environment variable TETHER_<FLAG> (e.g. TETHER_LISTEN, TETHER_SERVER, TETHER_CORS_ORIGINS).\nWithout --tls-cert the gateway listens on loopback only unless --insecure. See docs/SECURITY.md.\n\n")
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
	if err := envflag.CheckEnv(fs, "TETHER"); err != nil {
		return err
	}
	if err := envflag.HostPort(fs, "listen", "metrics"); err != nil {
		return err
	}
	if _, err := target.Parse(*servers); err != nil {
		return fmt.Errorf("--server: %w", err)
	}
	if *maxBody <= 0 {
		return fmt.Errorf("%s: must be a positive number of bytes", envflag.Source(fs, "max-body"))
	}
	if err := envflag.Positive(fs, "watch-write-timeout"); err != nil {
		return err
	}
	log, err := logging.New(os.Stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	useTLS := *tlsCert != ""
	for _, a := range []struct{ flag, addr string }{{"--listen", *listen}, {"--metrics", *metricsAddr}} {
		if err := gateway.CheckPlaintext(a.flag, a.addr, useTLS, *insecureFlag); err != nil {
			return err
		}
	}
	var httpsCfg *tls.Config
	if useTLS {
		keyFile := access.ResolveSecretPath(*tlsKey)
		if w, err := access.CheckSecretFile(keyFile, "--tls-key"); err != nil {
			return err
		} else if w != "" {
			log.Warn(w)
		}
		st, err := access.NewServerTLS(access.TLSFiles{Cert: access.ResolveSecretPath(*tlsCert), Key: keyFile}, log)
		if err != nil {
			return err
		}
		httpsCfg = &tls.Config{
			MinVersion: tls.VersionTLS12,
			NextProtos: []string{"h2", "http/1.1"},
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				return st.Certificate(), nil
			},
		}
	} else if !isLoopbackAddr(*listen) {
		log.Warn("TLS is off: API keys and commands cross the network in clear (--insecure)", "listen", *listen)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var metrics *gateway.Metrics
	if *metricsAddr != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		metrics = gateway.NewMetrics(reg)
		var metricsTLS *tls.Config
		if !isLoopbackAddr(*metricsAddr) {
			metricsTLS = httpsCfg
		}
		stopMetrics, err := serveMetrics(ctx, *metricsAddr, reg, metricsTLS, log)
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
		WatchWriteTimeout:  *watchWriteTimeout,
		Logger:             log,
		Metrics:            metrics,
	})
	if err != nil {
		return err
	}
	defer gw.Close()
	// The effective configuration, once.
	log.Info("tether-gateway starting", "listen", *listen, "tls", useTLS, "servers", splitList(*servers), "metrics", *metricsAddr, "version", version.String(),
		"cors_origins", splitList(*corsOrigins), "max_body", *maxBody, "server_ca", *serverCA, "server_name", *serverName,
		"log_format", *logFormat, "log_level", *logLevel)
	ln, err := new(net.ListenConfig).Listen(ctx, "tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *listen, err)
	}
	if httpsCfg != nil {
		ln = tls.NewListener(ln, httpsCfg)
	}
	return gw.Serve(ctx, ln)
}

// serveMetrics serves reg on addr at /metrics until the returned function is
// called (after the gateway's own drain, so the drain can be scraped).
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, tlsCfg *tls.Config, log *slog.Logger) (stop func(), err error) {
	ln, err := new(net.ListenConfig).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen: %w", err)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
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

// isLoopbackAddr reports whether a listen address binds loopback only.
func isLoopbackAddr(addr string) bool {
	return gateway.CheckPlaintext("", addr, false, false) == nil
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
