package session

import (
	"sync"
	"time"
)

// flapGuard counts takeovers per device id and puts an id that is taken
// over more than limit times within window into a cooldown. Only ids with
// recent takeovers have an entry; entries are swept when the map grows, so
// its size is bounded by the ids taken over within one window (plus those
// cooling down).
type flapGuard struct {
	limit    int
	window   time.Duration
	cooldown time.Duration

	mu      sync.Mutex // guards the following
	devices map[string]*flapState
	swept   int // map size after the last sweep
}

type flapState struct {
	takeovers []time.Time // within window, oldest first
	until     time.Time   // cooldown end (zero: none)
}

func newFlapGuard(c Config) *flapGuard {
	return &flapGuard{limit: c.FlapLimit, window: c.FlapWindow, cooldown: c.FlapCooldown, devices: map[string]*flapState{}}
}

// coolingDown reports whether id is in a cooldown at now, and until when.
func (g *flapGuard) coolingDown(id string, now time.Time) (time.Time, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	st, ok := g.devices[id]
	if !ok || !now.Before(st.until) {
		return time.Time{}, false
	}
	return st.until, true
}

// takeover records a takeover of id at now; it reports true when this one
// starts a cooldown.
func (g *flapGuard) takeover(id string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.devices) > 2*g.swept+1024 {
		g.sweepLocked(now)
	}
	st, ok := g.devices[id]
	if !ok {
		st = &flapState{}
		g.devices[id] = st
	}
	recent := st.takeovers[:0]
	for _, t := range st.takeovers {
		if now.Sub(t) < g.window {
			recent = append(recent, t)
		}
	}
	st.takeovers = append(recent, now)
	if len(st.takeovers) > g.limit && !now.Before(st.until) {
		st.until = now.Add(g.cooldown)
		st.takeovers = nil
		return true
	}
	return false
}

func (g *flapGuard) sweepLocked(now time.Time) {
	for id, st := range g.devices {
		if !now.Before(st.until) && (len(st.takeovers) == 0 || now.Sub(st.takeovers[len(st.takeovers)-1]) >= g.window) {
			delete(g.devices, id)
		}
	}
	g.swept = len(g.devices)
}
