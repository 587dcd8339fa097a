package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/tetherhq/tether/agent/backoff"
	"github.com/tetherhq/tether/agent/command"
	"github.com/tetherhq/tether/api/deviceid"
	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// Reconnect policy constants.
const (
	// quickReplaces is how many REPLACED closes within replacedWindow are
	// answered by reconnecting at once. More means two agents share a
	// device id and take the session from each other: back off instead.
	quickReplaces  = 1
	replacedWindow = time.Minute
	// maxRetryAfter bounds a server's retry_after hint, so that a bad value
	// cannot keep a device away for days.
	maxRetryAfter = 15 * time.Minute
	// sendQueueSize bounds the messages waiting for the send loop.
	sendQueueSize = 64
	// maxRunningCommands bounds the commands running at once; more are
	// refused with an error result.
	maxRunningCommands = 16
)

// Agent keeps the device's session with the server. Construct it with New;
// Run it once.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	runner  *command.Runner
	servers []string                     // ParseServers(cfg.ServerAddr)
	dial    map[string][]grpc.DialOption // per server

	// The loop (Run) owns the following.
	bo       *backoff.Backoff
	replaced []time.Time // recent REPLACED closes, oldest first
	current  int         // index in servers of the next attempt
}

// New validates cfg, fills in defaults, derives the device id from the
// primary MAC address when cfg.DeviceID is empty, and checks the server
// target. It does not connect.
func New(cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	cfg = cfg.WithDefaults()
	cfg.Labels = maps.Clone(cfg.Labels)
	a := &Agent{cfg: cfg, bo: backoff.New(cfg.Backoff)}
	if cfg.DeviceID == "" {
		info, err := cfg.InfoSource()
		if info.GetMac() == "" {
			return nil, fmt.Errorf("no device id: no up, non-loopback network interface with a hardware address (%v); set one with --device-id or device_id", err)
		}
		mac, err := net.ParseMAC(info.GetMac())
		if err != nil {
			return nil, fmt.Errorf("device id from MAC %q: %w; set one with --device-id", info.GetMac(), err)
		}
		id := deviceid.FromMAC(mac)
		if err := deviceid.Validate(id); err != nil {
			return nil, fmt.Errorf("device id from MAC %s: %w; set one with --device-id", info.GetMac(), err)
		}
		a.cfg.DeviceID = id
	}
	a.log = cfg.Logger.With("device", a.cfg.DeviceID)
	runner, err := command.New(command.Options{
		Commands:       cfg.Commands,
		OutputCap:      cfg.OutputCap,
		DefaultTimeout: cfg.DefaultCommandTimeout,
		Info:           a.infoForCommand,
	})
	if err != nil {
		return nil, fmt.Errorf("agent commands: %w", err)
	}
	a.runner = runner

	creds := cfg.Credentials
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	a.servers, _ = ParseServers(cfg.ServerAddr) // checked by Validate
	a.dial = make(map[string][]grpc.DialOption, len(a.servers))
	for _, addr := range a.servers {
		opts := []grpc.DialOption{
			grpc.WithTransportCredentials(creds),
			grpc.WithKeepaliveParams(ClientKeepalive()),
		}
		if cfg.PerRPC != nil {
			opts = append(opts, grpc.WithPerRPCCredentials(cfg.PerRPC))
		}
		if d := tcpDialer(addr, tcpUserTimeout); d != nil {
			opts = append(opts, grpc.WithContextDialer(d))
		}
		opts = append(opts, cfg.DialOptions...)
		// NewClient does not connect; it checks the target and the options,
		// so a typo fails at start rather than at every reconnect.
		conn, err := grpc.NewClient(addr, opts...)
		if err != nil {
			return nil, fmt.Errorf("server address %q: %w", addr, err)
		}
		conn.Close()
		a.dial[addr] = opts
	}
	return a, nil
}

// DeviceID is the id the agent connects as.
func (a *Agent) DeviceID() string { return a.cfg.DeviceID }

// Run keeps a session with the server until ctx ends, reconnecting with
// backoff. It returns nil once ctx has ended and every goroutine it started
// has finished.
func (a *Agent) Run(ctx context.Context) error {
	var watchdog <-chan time.Time
	if n := a.cfg.Notifier; n != nil && n.WatchdogInterval() > 0 {
		t := time.NewTicker(n.WatchdogInterval())
		defer t.Stop()
		watchdog = t.C
		a.notifyWatchdog()
	}
	a.log.Info("agent started", "servers", a.servers, "agent_version", a.cfg.Version, "legacy_no_pong", a.cfg.LegacyNoPong, "commands", a.runner.Allowed())
	for ctx.Err() == nil {
		addr := a.servers[a.current]
		end := a.session(ctx, addr, watchdog)
		if ctx.Err() != nil {
			break
		}
		delay, why := a.retryDelay(end, time.Now())
		next := a.advance(end)
		attrs := []any{"server", addr, "reason", end.reason(), "detail", end.detail(), "retry_in", delay.Round(time.Millisecond)}
		if next != addr {
			attrs = append(attrs, "next_server", next)
		}
		if end.acked {
			a.log.Info("session ended", append(attrs, "lease", end.lease, "duration", end.lasted.Round(time.Millisecond), "policy", why)...)
		} else {
			a.log.Warn("connect failed", append(attrs, "policy", why)...)
		}
		a.status(fmt.Sprintf("disconnected from %s (%s); reconnecting to %s in %v", addr, end.reason(), next, delay.Round(time.Millisecond)))
		if !a.sleep(ctx, delay, watchdog) {
			break
		}
	}
	a.status("stopping")
	a.log.Info("agent stopped")
	return nil
}

// advance picks the server for the next attempt and returns it: the next
// one in the list after a failure, a refusal or a drain; the same one after
// a takeover (REPLACED: the server is fine, another session of this device
// id won).
func (a *Agent) advance(end sessionEnd) string {
	if end.close.GetReason() != tetherv1.DisconnectReason_DISCONNECT_REASON_REPLACED {
		a.current = (a.current + 1) % len(a.servers)
	}
	return a.servers[a.current]
}

// sleep waits d (keeping the watchdog fed); it reports false when ctx ended
// first.
func (a *Agent) sleep(ctx context.Context, d time.Duration, watchdog <-chan time.Time) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return true
		case <-watchdog:
			a.notifyWatchdog()
		case <-ctx.Done():
			return false
		}
	}
}

// retryDelay decides how long to wait after a session (or attempt) ended,
// and says why, for the log.
func (a *Agent) retryDelay(end sessionEnd, now time.Time) (time.Duration, string) {
	if end.acked && end.lasted >= a.cfg.StableAfter {
		a.bo.Reset()
	}
	var retryAfter time.Duration
	if d := end.close.GetRetryAfter(); d != nil && d.IsValid() && d.AsDuration() > 0 {
		retryAfter = min(d.AsDuration(), maxRetryAfter)
	}
	reason := end.close.GetReason()
	if end.close == nil {
		switch status.Code(end.err) {
		case codes.Unauthenticated, codes.PermissionDenied:
			reason = tetherv1.DisconnectReason_DISCONNECT_REASON_AUTH_FAILED
		}
	}
	switch reason {
	case tetherv1.DisconnectReason_DISCONNECT_REASON_REPLACED:
		recent := a.replaced[:0]
		for _, t := range a.replaced {
			if now.Sub(t) < replacedWindow {
				recent = append(recent, t)
			}
		}
		a.replaced = append(recent, now)
		if len(a.replaced) <= quickReplaces && retryAfter == 0 {
			return 0, "replaced: reconnecting at once"
		}
		return max(retryAfter, a.bo.Next()), fmt.Sprintf("replaced %d times within %v (another agent with this device id?): backing off", len(a.replaced), replacedWindow)
	case tetherv1.DisconnectReason_DISCONNECT_REASON_DRAINING:
		if len(a.servers) > 1 {
			// The hint is about the draining server; the next one is
			// another. The jittered backoff still spreads its agents out.
			return a.bo.Next(), "server draining: next server after backoff"
		}
		// On top of the server's hint, so that a drained server's agents
		// spread out instead of arriving together.
		return retryAfter + a.bo.Next(), "server draining: backing off past retry_after"
	case tetherv1.DisconnectReason_DISCONNECT_REASON_OVERLOADED:
		// The replica shed this Hello before admitting it: wait its hint
		// plus up to half of it again, so shed agents spread out.
		if retryAfter == 0 {
			return a.bo.Next(), "server overloaded: backoff"
		}
		return retryAfter + a.bo.Jitter(retryAfter/2), "server overloaded: retry_after with jitter"
	case tetherv1.DisconnectReason_DISCONNECT_REASON_FLAPPING,
		tetherv1.DisconnectReason_DISCONNECT_REASON_AUTH_FAILED,
		tetherv1.DisconnectReason_DISCONNECT_REASON_AUTH_REVOKED:
		half := a.bo.Max() / 2
		return max(retryAfter, half+a.bo.Jitter(half)), "refused by the server: long backoff"
	}
	return max(retryAfter, a.bo.Next()), "backoff"
}

// deviceInfo reads the device info and sets what the agent itself knows.
// It returns nil when the source returned nothing.
func (a *Agent) deviceInfo() *tetherv1.DeviceInfo {
	src, err := a.cfg.InfoSource()
	if err != nil {
		a.log.Debug("device info incomplete", "err", err)
	}
	if src == nil {
		return nil
	}
	info := proto.Clone(src).(*tetherv1.DeviceInfo)
	if len(a.cfg.Labels) > 0 {
		if info.Labels == nil {
			info.Labels = make(map[string]string, len(a.cfg.Labels))
		}
		maps.Copy(info.Labels, a.cfg.Labels)
	}
	info.AgentVersion = a.cfg.Version
	if a.runner != nil {
		// Names and argument shapes only (never argv); the server bounds
		// the list (session.MaxInfoCommands), so report at most that many.
		info.Commands = a.runner.Specs()
		if len(info.Commands) > command.MaxReported {
			info.Commands = info.Commands[:command.MaxReported]
		}
	}
	return info
}

func (a *Agent) infoForCommand() (*tetherv1.DeviceInfo, error) {
	if info := a.deviceInfo(); info != nil {
		return info, nil
	}
	return nil, errors.New("device info is not available")
}

func (a *Agent) status(s string) {
	if a.cfg.Notifier != nil {
		if err := a.cfg.Notifier.Status(s); err != nil {
			a.log.Debug("sd_notify status failed", "err", err)
		}
	}
}

func (a *Agent) notifyWatchdog() {
	if err := a.cfg.Notifier.Watchdog(); err != nil {
		a.log.Debug("sd_notify watchdog failed", "err", err)
	}
}
