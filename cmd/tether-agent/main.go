// Command tether-agent runs on a device and keeps its one gRPC stream to the
// Tether server: it sends Hello, answers Pings, runs allow-listed commands
// and reconnects with jittered backoff. Settings come from flags, TETHER_*
// environment variables and the YAML config file, in that order of
// precedence; under systemd it speaks sd_notify (Type=notify, watchdog).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/tetherhq/tether/agent"
	"github.com/tetherhq/tether/agent/config"
	"github.com/tetherhq/tether/agent/sdnotify"
	"github.com/tetherhq/tether/internal/envflag"
	"github.com/tetherhq/tether/internal/logging"
	"github.com/tetherhq/tether/internal/version"
)

const defaultServer = "127.0.0.1:7070"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "tether-agent:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("tether-agent", flag.ContinueOnError)
	server := fs.String("server", defaultServer, "server gRPC address host:port, or several comma-separated (tried in turn: the agent moves to the next when one fails, refuses it or drains), or dns:///name:port (every address of the name); overrides server: in the config file")
	configPath := fs.String("config", "", "config file (default "+config.DefaultPath+", which may be absent; a file named here must exist)")
	deviceID := fs.String("device-id", "", "device id, 1-64 of [A-Za-z0-9._-] (default: the primary MAC address, aa-bb-cc-dd-ee-ff)")
	legacy := fs.Bool("legacy-no-pong", false, "behave like an old agent: never answer Pings, do not advertise CAPABILITY_PONG")
	caFile := fs.String("ca", "", "CA bundle (PEM) that verifies the server certificate; turns TLS on")
	tlsCert := fs.String("tls-cert", "", "device client certificate (PEM) for mutual TLS (URI SAN tether://device/<id> or CN = the device id); turns TLS on")
	tlsKey := fs.String("tls-key", "", "device client key (PEM)")
	useTLS := fs.Bool("tls", false, "use TLS with the system roots (implied by --ca and --tls-cert)")
	serverName := fs.String("server-name", "", "name expected in the server certificate (default: the host of --server)")
	tokenFile := fs.String("token-file", "", "file holding the device token (tether-server token issue), sent as authorization: Bearer; re-read at every reconnect")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: tether-agent [flags]\n\n"+
			"Every flag can also be set with an environment variable TETHER_<FLAG> (e.g. TETHER_SERVER,\n"+
			"TETHER_DEVICE_ID, TETHER_LEGACY_NO_PONG). A flag wins over its variable, a variable over the\n"+
			"config file, the config file over the default.\n\n")
		fs.PrintDefaults()
	}
	if err := envflag.Parse(fs, "TETHER", args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	set := map[string]bool{} // flags given on the command line or in the environment
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (see --help)", fs.Args())
	}
	if *showVersion {
		fmt.Println("tether-agent", version.String())
		return nil
	}
	if err := envflag.CheckEnv(fs, "TETHER"); err != nil {
		return err
	}
	if set["server"] {
		if _, err := agent.ParseServers(*server); err != nil {
			if src := envflag.Source(fs, "server"); !strings.HasPrefix(src, "--") {
				return fmt.Errorf("%s: %w", src, err)
			}
			return fmt.Errorf("--server: %w", err)
		}
	}
	log, err := logging.New(os.Stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	slog.SetDefault(log)

	var file *config.File
	if set["config"] {
		file, err = config.Load(*configPath)
	} else {
		file, err = config.LoadDefault()
	}
	if err != nil {
		return err
	}

	notifier, err := sdnotify.FromEnv(true) // commands must not inherit NOTIFY_SOCKET
	if err != nil {
		log.Warn("sd_notify", "err", err)
	}
	cfg := agent.Config{
		ServerAddr:   pick(set["server"], *server, string(file.Server), defaultServer),
		DeviceID:     pick(set["device-id"], *deviceID, file.DeviceID, ""),
		LegacyNoPong: pick(set["legacy-no-pong"], *legacy, file.LegacyNoPong, false),
		Labels:       file.Labels,
		Commands:     file.CommandSpecs(),
		OutputCap:    file.OutputCap,
		Version:      version.Short(),
		Logger:       log,
		Notifier:     notifier,
	}
	to := agent.TLSOptions{
		CA:         pick(set["ca"], *caFile, file.CA, ""),
		Cert:       pick(set["tls-cert"], *tlsCert, file.TLSCert, ""),
		Key:        pick(set["tls-key"], *tlsKey, file.TLSKey, ""),
		ServerName: *serverName,
	}
	secure := pick(set["tls"], *useTLS, file.TLS, false) || to.CA != "" || to.Cert != ""
	if secure {
		if cfg.Credentials, err = agent.TLSCredentials(to); err != nil {
			return err
		}
	}
	if tf := pick(set["token-file"], *tokenFile, file.TokenFile, ""); tf != "" {
		if cfg.PerRPC, err = agent.TokenCredentials(tf, secure); err != nil {
			return err
		}
		if !secure {
			log.Warn("sending the device token over plaintext (no --ca/--tls): only acceptable against a server on this host")
		}
	}
	servers, err := agent.ParseServers(cfg.ServerAddr)
	if err != nil {
		return fmt.Errorf("server: in %s: %w", configName(set["config"], *configPath), err)
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// Ready as soon as the agent runs, not when the server answers: a
	// device must count as started through a long network outage.
	if err := notifier.Ready(); err != nil {
		log.Warn("sd_notify READY failed", "err", err)
	}
	context.AfterFunc(ctx, func() { _ = notifier.Stopping() })
	// The effective configuration, once, after flags, environment, config
	// file and defaults were combined.
	log.Info("tether-agent starting", "version", version.String(), "device", a.DeviceID(), "servers", servers,
		"config", configName(set["config"], *configPath), "labels", len(cfg.Labels), "commands", len(cfg.Commands),
		"legacy_no_pong", cfg.LegacyNoPong, "tls", secure, "ca", to.CA, "mtls", to.Cert != "", "server_name", to.ServerName,
		"token", cfg.PerRPC != nil, "log_format", *logFormat, "log_level", *logLevel)
	return a.Run(ctx)
}

// pick applies the precedence below flags and environment: a value set
// there wins, then a non-zero value from the config file, then the default.
func pick[T comparable](set bool, flagValue, fileValue, def T) T {
	var zero T
	switch {
	case set:
		return flagValue
	case fileValue != zero:
		return fileValue
	}
	return def
}

func configName(explicit bool, path string) string {
	if explicit {
		return path
	}
	if _, err := os.Stat(config.DefaultPath); err == nil {
		return config.DefaultPath
	}
	return "none"
}
