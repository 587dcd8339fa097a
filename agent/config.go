package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tetherhq/tether/agent/backoff"
	"github.com/tetherhq/tether/agent/command"
	"github.com/tetherhq/tether/api/deviceid"
	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/internal/version"
)

// Defaults for zero Config fields.
const (
	DefaultHelloTimeout = 10 * time.Second
	DefaultStableAfter  = 30 * time.Second
	DefaultInfoInterval = 30 * time.Second
)

// Config configures an Agent. Zero values mean the defaults; only
// ServerAddr is required.
type Config struct {
	// ServerAddr is the server's gRPC target, or several separated by
	// commas (ParseServers): host:port, or a grpc-go target
	// (dns:///host:port, unix:///path, passthrough:///name). The agent
	// starts with the first and moves to the next after every connection
	// attempt or session that fails or is refused, and when a server drains
	// (a REPLACED session reconnects to the same one).
	ServerAddr string
	// DeviceID is the device's id: 1-64 characters of [A-Za-z0-9._-].
	// Empty means the primary MAC address, lowercase with dashes
	// (aa-bb-cc-dd-ee-ff), read once by New.
	DeviceID string
	// Labels are reported in the device info.
	Labels map[string]string
	// LegacyNoPong makes the agent behave like one from before application
	// Pings: it does not advertise CAPABILITY_PONG and never answers a
	// Ping, so the server judges it by HTTP/2 keepalive alone.
	LegacyNoPong bool
	// Commands are the allow-listed commands besides the built-ins echo and
	// info.
	Commands map[string]command.Spec
	// OutputCap is how many bytes of combined output a command result keeps
	// (default 64 KiB, at most 1 MiB).
	OutputCap int
	// DefaultCommandTimeout bounds a command whose Spec sets no timeout;
	// a Command may ask for less, never for more (default 60s).
	DefaultCommandTimeout time.Duration
	// HelloTimeout bounds one connection attempt: dialing, opening the
	// stream, sending Hello and receiving HelloAck (default 10s).
	HelloTimeout time.Duration
	// Backoff schedules reconnects: full jitter with a ceiling doubling from
	// Initial (default 1s) to Max (default 60s). Its Min defaults to a tenth
	// of Initial, so that retries never spin.
	Backoff backoff.Config
	// StableAfter is how long a session must have lasted for its end to
	// restart the backoff schedule from Initial (default 30s).
	StableAfter time.Duration
	// InfoInterval is how often the device info is re-read; a change is
	// sent as InfoUpdate (default 30s).
	InfoInterval time.Duration
	// Version is the agent version reported in Hello and the device info
	// (default: the module version, or "devel").
	Version string
	// Logger receives one line per lifecycle event (default slog.Default()).
	Logger *slog.Logger
	// Credentials secure the connection (TLSCredentials). Nil means
	// plaintext: dev mode, for a server on loopback.
	Credentials credentials.TransportCredentials
	// PerRPC, if set, authenticates the Connect stream (TokenCredentials).
	PerRPC credentials.PerRPCCredentials
	// DialOptions are applied after the agent's own (keepalive, dialer,
	// credentials), so they override them; tests pass a bufconn dialer.
	DialOptions []grpc.DialOption
	// Notifier receives connection status and watchdog pings from the
	// agent's loop (nil = none). *sdnotify.Notifier implements it.
	Notifier Notifier
	// InfoSource reads the device info (default SystemInfo). The agent sets
	// Labels and AgentVersion on what it returns. It is called from the
	// loop and from the info command, so it must be safe for concurrent use.
	InfoSource func() (*tetherv1.DeviceInfo, error)
	// OnSession, when set, is called from the agent's loop after every
	// HelloAck with the session's lease id. It must not block.
	OnSession func(lease uint64)
}

// Notifier is told what the agent is doing; see agent/sdnotify.
type Notifier interface {
	// Status reports a one-line connection status.
	Status(string) error
	// Watchdog says the agent's loop is alive.
	Watchdog() error
	// WatchdogInterval is how often Watchdog must be called (0 = never).
	WatchdogInterval() time.Duration
}

// WithDefaults returns c with every zero field that has a default set to
// it. DeviceID stays empty: its default needs the network interfaces, which
// New reads.
func (c Config) WithDefaults() Config {
	if c.OutputCap == 0 {
		c.OutputCap = command.DefaultOutputCap
	}
	if c.DefaultCommandTimeout == 0 {
		c.DefaultCommandTimeout = command.DefaultTimeout
	}
	if c.HelloTimeout == 0 {
		c.HelloTimeout = DefaultHelloTimeout
	}
	if c.Backoff.Initial == 0 {
		c.Backoff.Initial = backoff.DefaultInitial
	}
	if c.Backoff.Max == 0 {
		c.Backoff.Max = backoff.DefaultMax
	}
	if c.Backoff.Min == 0 {
		c.Backoff.Min = c.Backoff.Initial / 10
	}
	if c.StableAfter == 0 {
		c.StableAfter = DefaultStableAfter
	}
	if c.InfoInterval == 0 {
		c.InfoInterval = DefaultInfoInterval
	}
	if c.Version == "" {
		c.Version = version.Short()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.InfoSource == nil {
		c.InfoSource = SystemInfo
	}
	return c
}

// Validate reports the problems of c, after defaults. An empty DeviceID is
// valid (New derives it).
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	if c.ServerAddr == "" {
		errs = append(errs, errors.New("server address is empty"))
	} else if _, err := ParseServers(c.ServerAddr); err != nil {
		errs = append(errs, err)
	}
	if c.DeviceID != "" {
		if err := deviceid.Validate(c.DeviceID); err != nil {
			errs = append(errs, err)
		}
	}
	for name, d := range map[string]time.Duration{
		"default command timeout": c.DefaultCommandTimeout,
		"hello timeout":           c.HelloTimeout,
		"initial backoff":         c.Backoff.Initial,
		"maximum backoff":         c.Backoff.Max,
		"stable-session time":     c.StableAfter,
		"info interval":           c.InfoInterval,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %v is negative", name, d))
		}
	}
	if c.Backoff.Max < c.Backoff.Initial {
		errs = append(errs, fmt.Errorf("maximum backoff %v is below the initial backoff %v", c.Backoff.Max, c.Backoff.Initial))
	}
	if c.OutputCap < 0 || c.OutputCap > command.MaxOutputCap {
		errs = append(errs, fmt.Errorf("output cap %d: want 1 to %d bytes", c.OutputCap, command.MaxOutputCap))
	}
	for k := range c.Labels {
		if k == "" {
			errs = append(errs, errors.New("a label has an empty name"))
		}
	}
	return errors.Join(errs...)
}
