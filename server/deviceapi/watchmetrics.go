package deviceapi

import "github.com/prometheus/client_golang/prometheus"

// watchMetrics are the watch limits' and the event feed's metrics.
type watchMetrics struct {
	refused *prometheus.CounterVec
	ended   *prometheus.CounterVec
}

func newWatchMetrics() watchMetrics {
	return watchMetrics{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_watch_refused_total",
			Help: "WatchDevices calls refused with RESOURCE_EXHAUSTED, by the limit that refused them (replica, api_key).",
		}, []string{"limit"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_watch_ended_total",
			Help: "Watch streams the server ended: slow (fell a whole buffer behind; the client resumes) or resnapshot (the event feed lost its place; the client re-snapshots).",
		}, []string{"reason"}),
	}
}

// RegisterMetrics registers the watch and event feed metrics with reg.
func (s *Service) RegisterMetrics(reg prometheus.Registerer) error {
	stat := func(name, help string, counter bool, f func() float64) prometheus.Collector {
		if counter {
			return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
		}
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	cs := []prometheus.Collector{
		s.wm.refused, s.wm.ended,
		stat("tether_feed_watchers", "Watchers subscribed to this replica's event feed.", false, func() float64 { return float64(s.feed.Stats().Watchers) }),
		stat("tether_feed_reads_total", "Reads of the registry's event stream by this replica's one event feed.", true, func() float64 { return float64(s.feed.Stats().Reads) }),
		stat("tether_feed_events_total", "Events the event feed read from the registry (each fanned out to every watcher in memory).", true, func() float64 { return float64(s.feed.Stats().Events) }),
		stat("tether_feed_read_errors_total", "Failed reads of the registry's event stream by the event feed (retried with back-off).", true, func() float64 { return float64(s.feed.Stats().ReadErrors) }),
		stat("tether_feed_slow_watchers_total", "Watchers ended because their buffer was full (they resume from their last event).", true, func() float64 { return float64(s.feed.Stats().Slow) }),
		stat("tether_feed_handoff_timeouts_total", "Fan-out waits for a chunk of watchers to write an event that gave up after the bound (a watcher's client is slow or stalled; each stalled watcher is waited for once).", true, func() float64 { return float64(s.feed.Stats().HandoffTimeouts) }),
		stat("tether_feed_direct_writes_total", "Event batches the fan-out wrote to a watcher's client itself (in-process HTTP/1.1 watchers), without waking the watcher's goroutine.", true, func() float64 { return float64(s.feed.Stats().Directs) }),
		stat("tether_feed_joins_total", "Fan-outs that events arriving meanwhile joined (the watchers not reached yet got both batches in one write).", true, func() float64 { return float64(s.feed.Stats().Joins) }),
		stat("tether_feed_resnapshots_total", "Times the event feed lost its place in the registry's events and ended every watcher for a re-snapshot.", true, func() float64 { return float64(s.feed.Stats().Resnapshots) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
