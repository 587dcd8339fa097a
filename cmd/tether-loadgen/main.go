package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tetherhq/tether/internal/envflag"
	"github.com/tetherhq/tether/internal/loadgen"
	"github.com/tetherhq/tether/internal/version"
)

// envPrefix is the prefix of the environment variables for the flags.
const envPrefix = "TETHER_LOADGEN"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tether-loadgen:", err)
		os.Exit(1)
	}
}

// options are the parsed flags.
type options struct {
	cfg         loadgen.Config
	json        bool
	showVersion bool
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("tether-loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	c := &o.cfg
	servers := fs.String("server", "127.0.0.1:7070", "server gRPC address(es), host:port[,host:port...]; agents are spread round-robin over them")
	fs.IntVar(&c.Devices, "devices", 100, "number of simulated agents (at most the open-file hard limit - 100 per process)")
	fs.StringVar(&c.IDPrefix, "id-prefix", fmt.Sprintf("loadgen-%d-", os.Getpid()), "device id prefix; ids are prefix+index and must match [A-Za-z0-9._-]{1,64}")
	ramp := fs.String("ramp", "0", "connect rate, N/s (0 = as fast as --max-dials allows)")
	fs.IntVar(&c.MaxDials, "max-dials", loadgen.DefaultMaxDials, "connection attempts in flight at once (dial to HelloAck)")
	fs.Float64Var(&c.LegacyFraction, "legacy-fraction", 0, "fraction 0..1 of agents that never answer Pings and do not advertise CAPABILITY_PONG")
	sourceIPs := fs.String("source-ips", "", "local source addresses, round-robin: a range 127.0.0.2-127.0.0.50, a list, or a count N (127.0.0.2 upwards); empty = kernel's choice")
	fs.DurationVar(&c.Duration, "duration", 0, "hold the sessions this long from the start, then close them all and exit (0 = until SIGINT/SIGTERM)")
	fs.DurationVar(&c.ReportEvery, "report-every", 5*time.Second, "progress line period on stderr (0 = none)")
	fs.BoolVar(&o.json, "json", false, "print the final report as JSON on stdout")
	fs.DurationVar(&c.DialTimeout, "dial-timeout", loadgen.DefaultDialTimeout, "bound on one connection attempt (TCP connect to HelloAck)")
	fs.BoolVar(&c.Reconnect, "reconnect", true, "re-dial sessions that ended or failed, with a small jittered backoff")
	cmdRate := fs.String("commands-rate", "0", "SendCommand echo calls per second, N/s, against random connected devices (0 = off)")
	fs.StringVar(&c.CommandsVia, "commands-via", "", "DeviceService address for --commands-rate (default: the first --server)")
	fs.StringVar(&c.CommandsHTTP, "commands-http", "", "send the --commands-rate calls through the JSON gateway at this base URL (http://host:port) instead of gRPC")
	fs.DurationVar(&c.CommandsWarmup, "warmup", 0, "commands sent during this first part of the command drive are not counted")
	fs.IntVar(&c.CommandsConcurrency, "commands-concurrency", loadgen.DefaultCommandsConcurrency, "SendCommand calls in flight at most; calls due beyond it are skipped")
	fs.DurationVar(&c.CommandTimeout, "command-timeout", loadgen.DefaultCommandTimeout, "timeout of one SendCommand call")
	fs.IntVar(&c.ReadBufferSize, "read-buffer", loadgen.DefaultBufferSize, "per-connection transport read buffer, bytes (negative = none)")
	fs.IntVar(&c.WriteBufferSize, "write-buffer", loadgen.DefaultBufferSize, "per-connection transport write buffer, bytes (negative = none)")
	window := fs.Int("window", loadgen.DefaultWindowSize, "static HTTP/2 stream and connection window, bytes (minimum 65536)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", loadgen.DefaultShutdownTimeout, "bound on closing every session at the end")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: tether-loadgen [flags]\n\n"+
			"Simulates --devices agents, each on its own connection, against Tether server replicas.\n"+
			"Every flag can also be set with an environment variable %s_<FLAG> (e.g. %s_DEVICES);\n"+
			"a flag wins over its variable.\n\n", envPrefix, envPrefix)
		fs.PrintDefaults()
	}
	if err := envflag.Parse(fs, envPrefix, args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q (see --help)", fs.Args())
	}
	if o.showVersion {
		return o, nil
	}
	var err error
	if c.Servers, err = loadgen.ParseServers(*servers); err != nil {
		return nil, fmt.Errorf("--server: %w", err)
	}
	if c.Ramp, err = loadgen.ParseRate(*ramp); err != nil {
		return nil, fmt.Errorf("--ramp: %w", err)
	}
	if c.CommandsRate, err = loadgen.ParseRate(*cmdRate); err != nil {
		return nil, fmt.Errorf("--commands-rate: %w", err)
	}
	if c.SourceIPs, err = loadgen.ParseSourceIPs(*sourceIPs); err != nil {
		return nil, fmt.Errorf("--source-ips: %w", err)
	}
	if *window < loadgen.DefaultWindowSize || *window > 1<<31-1 {
		return nil, fmt.Errorf("--window %d: want 65536..2147483647", *window)
	}
	c.WindowSize = int32(*window)
	c.AgentVersion = "loadgen-" + version.Short()
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if o.showVersion {
		fmt.Fprintln(stdout, "tether-loadgen", version.String())
		return nil
	}
	o.cfg.Progress = stderr
	c := &o.cfg
	fmt.Fprintf(stderr, "tether-loadgen %s: %d devices (legacy fraction %g) as %s0..%d against %s, ramp %g/s, duration %v\n",
		version.Short(), c.Devices, c.LegacyFraction, c.IDPrefix, c.Devices-1, strings.Join(c.Servers, ","), c.Ramp, c.Duration)
	rep, err := loadgen.Run(ctx, o.cfg)
	if err != nil {
		return err
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	_, err = io.WriteString(stdout, rep.Text())
	return err
}
