package backoff

import (
	"math/rand/v2"
	"time"
)

// Defaults for a zero Config.
const (
	DefaultInitial = time.Second
	DefaultMax     = 60 * time.Second
)

// Config sets the schedule. Zero values mean the defaults.
type Config struct {
	// Initial is the ceiling of the first delay (default 1s). The ceiling
	// doubles with every Next until it reaches Max.
	Initial time.Duration
	// Max caps the ceiling (default 60s).
	Max time.Duration
	// Min is a floor under every delay (default 0: pure full jitter). A small
	// floor keeps an unlucky run of near-zero draws from hammering a server.
	// It is clamped to the current ceiling.
	Min time.Duration
	// Rand returns a uniform value in [0, n) for n > 0 (default
	// math/rand/v2.Int64N). Tests inject a deterministic source.
	Rand func(n int64) int64
}

// Backoff hands out the delays of one retry loop.
type Backoff struct {
	cfg     Config
	attempt int
}

// New returns a Backoff at its first attempt.
func New(cfg Config) *Backoff {
	if cfg.Initial <= 0 {
		cfg.Initial = DefaultInitial
	}
	if cfg.Max <= 0 {
		cfg.Max = DefaultMax
	}
	if cfg.Max < cfg.Initial {
		cfg.Max = cfg.Initial
	}
	if cfg.Min < 0 {
		cfg.Min = 0
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Int64N
	}
	return &Backoff{cfg: cfg}
}

// Ceiling is the largest delay the next call to Next can return:
// min(Max, Initial·2^attempt).
func (b *Backoff) Ceiling() time.Duration {
	c := b.cfg.Initial
	for i := 0; i < b.attempt && c < b.cfg.Max; i++ {
		if c > b.cfg.Max/2 {
			return b.cfg.Max // doubling would pass Max (or overflow)
		}
		c *= 2
	}
	return min(c, b.cfg.Max)
}

// Next returns the delay before the next attempt, uniform in
// [min(Min, ceiling), ceiling), and doubles the ceiling for the one after.
func (b *Backoff) Next() time.Duration {
	c := b.Ceiling()
	if c < b.cfg.Max {
		b.attempt++
	}
	floor := min(b.cfg.Min, c)
	return floor + b.Jitter(c-floor)
}

// Jitter returns a uniform duration in [0, d) (0 when d <= 0), from the
// configured random source.
func (b *Backoff) Jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	r := b.cfg.Rand(int64(d))
	if r < 0 || r >= int64(d) { // a broken injected source must not break the bounds
		r = 0
	}
	return time.Duration(r)
}

// Reset starts the schedule over, for the next failure after a session that
// stayed up long enough to count as healthy.
func (b *Backoff) Reset() { b.attempt = 0 }

// Attempt is how many delays have been handed out since the last Reset, up to
// the point where the ceiling reached Max.
func (b *Backoff) Attempt() int { return b.attempt }

// Max is the configured cap.
func (b *Backoff) Max() time.Duration { return b.cfg.Max }
