// Command tether-gateway serves the Tether HTTP/JSON API (/v1/devices...,
// /openapi.json, /healthz, /readyz) in front of one or more tether-server
// replicas, translating to their gRPC DeviceService. See docs/GATEWAY.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

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
	maxBody := fs.Int64("max-body", gateway.DefaultMaxBodyBytes, "maximum request body size in bytes")
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
	gw, err := gateway.New(ctx, gateway.Config{
		Servers:            splitList(*servers),
		CORSAllowedOrigins: splitList(*corsOrigins),
		MaxBodyBytes:       *maxBody,
		Logger:             log,
	})
	if err != nil {
		return err
	}
	defer gw.Close()
	log.Info("tether-gateway starting", "listen", *listen, "servers", *servers, "version", version.String())
	return gw.Run(ctx, *listen)
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
