package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/internal/logging"
)

// Metrics holds the server's collectors. The zero value is not usable; build
// it with New. Methods on a nil *Metrics are no-ops.
type Metrics struct {
	Sessions         *prometheus.GaugeVec
	Connects         prometheus.Counter
	Disconnects      *prometheus.CounterVec
	DetectionLatency prometheus.Histogram
	PingRTT          prometheus.Histogram
	Takeovers        prometheus.Counter
	StaleWrites      *prometheus.CounterVec
	Commands         *prometheus.CounterVec
	CommandLatency   prometheus.Histogram
	LateResults      prometheus.Counter
	StoreErrors      *prometheus.CounterVec
	Outcomes         *prometheus.CounterVec
	Deferred         *prometheus.CounterVec
	Shed             *prometheus.CounterVec
	Orphans          prometheus.Counter
	Reconciles       *prometheus.CounterVec
	Remirrors        prometheus.Counter
	Watchers         prometheus.Gauge
	HelloRejects     *prometheus.CounterVec
	Flaps            prometheus.Counter
}

// New creates the collectors and registers them with reg (if non-nil).
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tether_sessions", Help: "Sessions held by this replica, by liveness mode.",
		}, []string{"mode"}),
		Connects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_connects_total", Help: "Sessions accepted (HelloAck sent).",
		}),
		Disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_disconnects_total", Help: "Sessions ended, by reason.",
		}, []string{"reason"}),
		DetectionLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tether_offline_detection_seconds",
			Help:    "Time from a device's last sign of life to the server declaring its session dead (ping or keepalive timeout).",
			Buckets: []float64{1, 2, 5, 8, 10, 12, 14, 15, 16, 17, 20, 30, 60},
		}),
		PingRTT: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tether_ping_rtt_seconds", Help: "Application Ping/Pong round-trip time.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14),
		}),
		Takeovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_takeovers_total", Help: "Sessions replaced by a newer session of the same device.",
		}),
		StaleWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_registry_stale_writes_total", Help: "Registry writes refused because their lease was no longer current, by operation.",
		}, []string{"op"}),
		Commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_commands_total", Help: "Commands sent to devices, by outcome (gRPC code name).",
		}, []string{"outcome"}),
		CommandLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tether_command_duration_seconds", Help: "Command round trip from request to result.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		LateResults: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_command_late_results_total", Help: "Command results that arrived after their caller gave up (dropped).",
		}),
		StoreErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_registry_errors_total", Help: "Registry store operations that failed (store unreachable or erroring), by operation.",
		}, []string{"op"}),
		Outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_registry_outcomes_total", Help: "Registry writes by operation and outcome class: applied, stale (a newer lease is current; the session ends), missing (the record was lost; written back) or unknown (timeout or error reply; kept and resolved).",
		}, []string{"op", "outcome"}),
		Deferred: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_ping_timeouts_deferred_total", Help: "Ping timeouts put off because the agent had shown signs of life the server had not processed yet (queued: a message waited for the session loop; read: bytes arrived after the Ping; kernel: unread bytes in the socket). Each is a session an overloaded replica would otherwise have wrongly ended.",
		}, []string{"evidence"}),
		Shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_hello_shed_total", Help: "Hellos refused before the registry claim because the replica was saturated (Close OVERLOADED with retry_after), by signal.",
		}, []string{"signal"}),
		Orphans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_registry_orphans_ended_total", Help: "Registry records naming this replica for a session it does not hold, ended by reconciliation (reason ORPHANED).",
		}),
		Reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_registry_reconciles_total", Help: "Reconciliation passes of this replica, by result (ok or error).",
		}, []string{"result"}),
		Remirrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_registry_remirrors_total", Help: "Times this replica re-wrote its live sessions into the store after the store lost them.",
		}),
		Watchers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tether_watchers", Help: "Open WatchDevices streams on this replica.",
		}),
		HelloRejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_hello_rejects_total", Help: "Streams refused before a session began, by gRPC code.",
		}, []string{"code"}),
		Flaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_flapping_total", Help: "Device ids put in a flapping cooldown (taken over too often).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Sessions, m.Connects, m.Disconnects, m.DetectionLatency, m.PingRTT, m.Takeovers,
			m.StaleWrites, m.Commands, m.CommandLatency, m.LateResults, m.StoreErrors, m.Outcomes, m.Deferred, m.Shed, m.Orphans, m.Reconciles, m.Remirrors, m.Watchers, m.HelloRejects, m.Flaps)
	}
	return m
}

// ModeLabel is the label value for a liveness mode (logging.Mode: the
// same word as in the logs).
func ModeLabel(mode tetherv1.LivenessMode) string { return logging.Mode(mode) }

// ReasonLabel is the label value for a disconnect reason (logging.Reason:
// the same word as in the logs).
func ReasonLabel(r tetherv1.DisconnectReason) string { return logging.Reason(r) }

// SessionStarted records an accepted session.
func (m *Metrics) SessionStarted(mode tetherv1.LivenessMode) {
	if m == nil {
		return
	}
	m.Connects.Inc()
	m.Sessions.WithLabelValues(ModeLabel(mode)).Inc()
}

// SessionEnded records an ended session.
func (m *Metrics) SessionEnded(mode tetherv1.LivenessMode, reason tetherv1.DisconnectReason) {
	if m == nil {
		return
	}
	m.Sessions.WithLabelValues(ModeLabel(mode)).Dec()
	m.Disconnects.WithLabelValues(ReasonLabel(reason)).Inc()
	if reason == tetherv1.DisconnectReason_DISCONNECT_REASON_REPLACED {
		m.Takeovers.Inc()
	}
}

// Detected records the time from last sign of life to detection.
func (m *Metrics) Detected(d time.Duration) {
	if m != nil {
		m.DetectionLatency.Observe(d.Seconds())
	}
}

// RTT records a Ping round trip.
func (m *Metrics) RTT(d time.Duration) {
	if m != nil {
		m.PingRTT.Observe(d.Seconds())
	}
}

// StaleWrite records a fenced write refused by the store.
func (m *Metrics) StaleWrite(op string) {
	if m != nil {
		m.StaleWrites.WithLabelValues(op).Inc()
	}
}

// Outcome records a registry write's outcome class.
func (m *Metrics) Outcome(op, outcome string) {
	if m != nil {
		m.Outcomes.WithLabelValues(op, outcome).Inc()
	}
}

// TimeoutDeferred records a ping timeout put off on a sign of life.
func (m *Metrics) TimeoutDeferred(evidence string) {
	if m != nil {
		m.Deferred.WithLabelValues(evidence).Inc()
	}
}

// HelloShed records a Hello shed by admission control.
func (m *Metrics) HelloShed(signal string) {
	if m != nil {
		m.Shed.WithLabelValues(signal).Inc()
	}
}

// Orphaned records records ended by reconciliation.
func (m *Metrics) Orphaned(n int) {
	if m != nil {
		m.Orphans.Add(float64(n))
	}
}

// Reconciled records a reconciliation pass.
func (m *Metrics) Reconciled(ok bool) {
	if m != nil {
		r := "ok"
		if !ok {
			r = "error"
		}
		m.Reconciles.WithLabelValues(r).Inc()
	}
}

// StoreError records a failed store operation.
func (m *Metrics) StoreError(op string) {
	if m != nil {
		m.StoreErrors.WithLabelValues(op).Inc()
	}
}

// Command records a finished command.
func (m *Metrics) Command(outcome string, d time.Duration) {
	if m != nil {
		m.Commands.WithLabelValues(outcome).Inc()
		m.CommandLatency.Observe(d.Seconds())
	}
}

// LateResult records a dropped late command result.
func (m *Metrics) LateResult() {
	if m != nil {
		m.LateResults.Inc()
	}
}

// Remirrored records a re-mirror run.
func (m *Metrics) Remirrored() {
	if m != nil {
		m.Remirrors.Inc()
	}
}

// WatcherDelta adds d to the open watcher count.
func (m *Metrics) WatcherDelta(d float64) {
	if m != nil {
		m.Watchers.Add(d)
	}
}

// HelloRejected records a stream refused before its session began.
func (m *Metrics) HelloRejected(code string) {
	if m != nil {
		m.HelloRejects.WithLabelValues(code).Inc()
	}
}

// Flapping records a device id put in a flapping cooldown.
func (m *Metrics) Flapping() {
	if m != nil {
		m.Flaps.Inc()
	}
}
