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
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/tetherhq/tether/gateway"
	"github.com/tetherhq/tether/internal/envflag"
	"github.com/tetherhq/tether/internal/logging"
	"github.com/tetherhq/tether/internal/version"
	"github.com/tetherhq/tether/server"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "tether-server:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("tether-server", flag.ContinueOnError)
	var cfg server.Config
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:7070", "gRPC listen address (agents, DeviceService, health, reflection)")
	fs.StringVar(&cfg.HTTP, "http", "", "serve the JSON gateway in-process on this address (e.g. 127.0.0.1:8080)")
	fs.StringVar(&cfg.Metrics, "metrics", "", "serve /metrics, /healthz and /readyz on this address")
	fs.StringVar(&cfg.Advertise, "advertise", "", "address peers use to reach this replica (default: the listen address)")
	fs.StringVar(&cfg.RedisURL, "redis", "", "Redis URL for the registry (redis://host:6379/0); empty = embedded in-memory store")
	fs.StringVar(&cfg.Session.Node, "node", "", "node name of this replica (default: hostname-port)")
	fs.DurationVar(&cfg.Session.PingInterval, "ping-interval", 10*time.Second, "application Ping interval, also the HTTP/2 keepalive time")
	fs.DurationVar(&cfg.Session.PingTimeout, "ping-timeout", 5*time.Second, "how long a Ping may go unanswered, also the HTTP/2 keepalive timeout")
	fs.DurationVar(&cfg.Session.HelloTimeout, "hello-timeout", 5*time.Second, "how long a new stream may take to send Hello")
	fs.DurationVar(&cfg.Session.NodeTTL, "lease-ttl", 15*time.Second, "how long a crashed replica's sessions keep reading as online")
	fs.DurationVar(&cfg.Session.MirrorInterval, "mirror-interval", 60*time.Second, "how often last-seen times are written to the registry (batched)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 10*time.Second, "bound on graceful shutdown")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: tether-server [flags]\n\nEvery flag can also be set with an environment variable TETHER_<FLAG> (e.g. TETHER_LISTEN, TETHER_REDIS).\n\n")
		fs.PrintDefaults()
	}
	if err := envflag.Parse(fs, "TETHER", args); err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return err
	}
	if *showVersion {
		fmt.Println("tether-server", version.String())
		return nil
	}
	log, err := logging.New(os.Stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	cfg.Logger = log
	cfg.Version = version.String()
	cfg.GatewayHandler = func(ctx context.Context, conn *grpc.ClientConn) (http.Handler, error) {
		return gateway.NewHandler(ctx, conn, gateway.Config{Logger: log})
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	srv, err := server.New(ctx, cfg)
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}
