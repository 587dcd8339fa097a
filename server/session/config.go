package session

import (
	"fmt"
	"log/slog"
	"time"
)

// Config holds every liveness number in one place. Zero values mean the
// defaults below; Validate checks the relations between them.
type Config struct {
	// Node names this replica in the registry (required).
	Node string

	// PingInterval is how often the server sends an application Ping to an
	// agent that supports Pong, and the HTTP/2 keepalive time
	// (keepalive.ServerParameters.Time) for every connection. Default 10s.
	PingInterval time.Duration

	// PingTimeout is how long a Ping may go unanswered (no Pong and no other
	// message) before the session is ended, and the HTTP/2 keepalive ack
	// timeout. A silent device is thus declared dead within
	// PingInterval+PingTimeout in both liveness modes. Default 5s.
	PingTimeout time.Duration

	// PingJitter is the largest fraction by which a Ping gap is shortened
	// at random (never lengthened, so the detection bound holds), so that
	// thousands of sessions do not ping in lockstep. It is at least 5% so
	// that the application layer always fires before the transport
	// keepalive for agents that Pong. Default 0.15.
	PingJitter float64

	// HelloTimeout bounds the wait for the first message. Default 5s.
	HelloTimeout time.Duration

	// MirrorInterval is how often last-seen times and RTTs are written to
	// the store, batched. It is the Redis cost knob: one command per device
	// per interval. Default 120s (half a command per device per minute).
	MirrorInterval time.Duration

	// NodeTTL is how long the registry keeps this replica's sessions online
	// after it stops renewing (a crash). Default 15s.
	NodeTTL time.Duration

	// MaxInflightCommands caps concurrent commands per session. Default 64.
	MaxInflightCommands int

	// SendQueue is no longer used (a session sends directly; kept so that
	// existing configurations still validate). Default 64.
	SendQueue int

	// FlapLimit is how many takeovers of one device id within FlapWindow
	// are tolerated; one more puts the id in a cooldown of FlapCooldown,
	// during which its Hellos are refused with Close(FLAPPING). Two agents
	// sharing an id (a cloned disk image) take it from each other every
	// second; a rebooting device takes over once. Defaults 10, 1m, 60s.
	FlapLimit    int
	FlapWindow   time.Duration
	FlapCooldown time.Duration

	// StoreTimeout bounds one registry call made for a session (Claim,
	// Release, UpdateInfo) and each renewal, mirror and reconciliation call.
	// A call that has not answered by then has an unknown outcome: it may
	// have been applied. Default 5s.
	StoreTimeout time.Duration

	// ReconcileInterval is how often the replica proves that the registry
	// matches the sessions it holds: records that name it for a lease it
	// does not hold are ended (ORPHANED), sessions it holds that the
	// registry lacks are written back. A phantom (e.g. a claim whose reply
	// was lost) reads offline within this interval plus a store round trip.
	// Default 10s.
	ReconcileInterval time.Duration

	// RevocationPoll is how often the replica checks the token deny list's
	// version and, when it moved, the tokens of its live sessions (a
	// revoked token's session ends within this interval plus a store
	// round trip). Default 500ms.
	RevocationPoll time.Duration

	// MaxPendingHellos caps the Hellos in flight (stream opened, session not
	// yet installed); more are shed with Close(OVERLOADED) and
	// RESOURCE_EXHAUSTED before the registry claim. Default 1024; negative
	// turns the cap off.
	MaxPendingHellos int

	// ShedSchedLatency, if positive, sheds new Hellos while the Go
	// scheduler's 99th percentile latency (sampled every 500 ms) is above
	// it: the replica is saturated and would read Pongs late. Off by
	// default (0): on a host shared with other busy processes the scheduler
	// latency also measures them; on a dedicated host 100–200 ms is a
	// sensible value.
	ShedSchedLatency time.Duration

	// ShedRetryAfter is the retry_after a shed Hello is told, jittered to
	// [0.5, 1.5) of it. Default 5s.
	ShedRetryAfter time.Duration

	// Logger receives one line per session lifecycle event.
	Logger *slog.Logger
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.PingInterval, 10*time.Second)
	def(&c.PingTimeout, 5*time.Second)
	def(&c.HelloTimeout, 5*time.Second)
	def(&c.MirrorInterval, 120*time.Second)
	def(&c.NodeTTL, 15*time.Second)
	def(&c.FlapWindow, time.Minute)
	def(&c.FlapCooldown, time.Minute)
	def(&c.RevocationPoll, 500*time.Millisecond)
	def(&c.StoreTimeout, 5*time.Second)
	def(&c.ReconcileInterval, 10*time.Second)
	def(&c.ShedRetryAfter, 5*time.Second)
	if c.MaxPendingHellos == 0 {
		c.MaxPendingHellos = 1024
	}
	if c.FlapLimit == 0 {
		c.FlapLimit = 10
	}
	if c.PingJitter == 0 {
		c.PingJitter = 0.15
	}
	if c.MaxInflightCommands == 0 {
		c.MaxInflightCommands = 64
	}
	if c.SendQueue == 0 {
		c.SendQueue = 64
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	switch {
	case c.Node == "":
		return fmt.Errorf("session: Node is required")
	case c.PingInterval < time.Second:
		return fmt.Errorf("session: ping interval %v is below 1s (grpc-go's keepalive floor)", c.PingInterval)
	case c.PingTimeout < 100*time.Millisecond:
		return fmt.Errorf("session: ping timeout %v is below 100ms", c.PingTimeout)
	case c.PingJitter < 0.05 || c.PingJitter > 0.5:
		return fmt.Errorf("session: ping jitter %v outside [0.05, 0.5]", c.PingJitter)
	case c.HelloTimeout <= 0:
		return fmt.Errorf("session: hello timeout must be positive")
	case c.MirrorInterval <= 0:
		return fmt.Errorf("session: mirror interval must be positive")
	case c.NodeTTL < time.Second:
		return fmt.Errorf("session: node TTL %v is below 1s", c.NodeTTL)
	case c.FlapLimit < 1 || c.FlapWindow <= 0 || c.FlapCooldown <= 0:
		return fmt.Errorf("session: flap limit, window and cooldown must be positive")
	case c.StoreTimeout < 10*time.Millisecond:
		return fmt.Errorf("session: store timeout %v is below 10ms", c.StoreTimeout)
	case c.ReconcileInterval < 100*time.Millisecond:
		return fmt.Errorf("session: reconcile interval %v is below 100ms", c.ReconcileInterval)
	case c.ShedRetryAfter <= 0:
		return fmt.Errorf("session: shed retry-after must be positive")
	case c.RevocationPoll <= 0:
		return fmt.Errorf("session: revocation poll interval must be positive")
	case c.MaxInflightCommands < 1 || c.SendQueue < 1:
		return fmt.Errorf("session: MaxInflightCommands and SendQueue must be at least 1")
	}
	return nil
}

// RenewInterval is how often the node's liveness in the registry is renewed
// (and a lost registry noticed): a fifth of the node TTL, between 500ms and 3s,
// so that a Redis that comes back empty is re-mirrored within seconds.
func (c Config) RenewInterval() time.Duration {
	d := c.NodeTTL / 5
	if d < 500*time.Millisecond {
		d = 500 * time.Millisecond
	}
	if d > 3*time.Second {
		d = 3 * time.Second
	}
	return d
}
