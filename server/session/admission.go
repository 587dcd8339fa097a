package session

import (
	"math"
	"math/rand/v2"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// admission sheds new Hellos while the replica is saturated, before the
// registry claim, so that an overloaded replica slows down instead of
// admitting sessions it cannot keep alive (whose ping timeouts would then
// feed a reconnect storm). Two signals, either enough:
//   - "pending": more Hellos in flight (stream opened, session not yet
//     installed) than Config.MaxPendingHellos;
//   - "sched": the Go scheduler's 99th percentile latency over the last
//     sampling period above Config.ShedSchedLatency — goroutines wait that
//     long to run, so Pongs are read that late;
//   - "late": within lateFor (the ping timeout) of a ping timeout put off
//     because this replica had not yet handled an answer that had arrived —
//     it is already late on the sessions it holds, so it takes no more.
//     Always on: it fires only on the replica's own lateness.
type admission struct {
	maxPending int
	schedLimit time.Duration
	lateFor    time.Duration
	lateUntil  atomic.Int64 // unix nanos

	mu       sync.Mutex // guards the following
	pending  int
	sampled  time.Time
	p99      time.Duration
	lastHist *metrics.Float64Histogram
}

// schedSamplePeriod is how often the scheduler latency is sampled (lazily,
// by the Hellos that ask).
const schedSamplePeriod = 500 * time.Millisecond

const schedMetric = "/sched/latencies:seconds"

// enter counts a Hello in flight and reports the signal that sheds it ("",
// admitted). Every enter is paired with a leave.
func (a *admission) enter(now time.Time) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pending++
	if a.maxPending > 0 && a.pending > a.maxPending {
		return "pending"
	}
	if now.UnixNano() < a.lateUntil.Load() {
		return "late"
	}
	if a.schedLimit > 0 {
		if now.Sub(a.sampled) >= schedSamplePeriod {
			a.sampleLocked(now)
		}
		if a.p99 > a.schedLimit {
			return "sched"
		}
	}
	return ""
}

// late records that a ping timeout was put off at now (see "late").
func (a *admission) late(now time.Time) {
	a.lateUntil.Store(now.Add(a.lateFor).UnixNano())
}

func (a *admission) leave() {
	a.mu.Lock()
	a.pending--
	a.mu.Unlock()
}

// sampleLocked reads the scheduler latency histogram and keeps the 99th
// percentile of what was added since the last sample.
func (a *admission) sampleLocked(now time.Time) {
	s := []metrics.Sample{{Name: schedMetric}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64Histogram {
		a.sampled = now
		return
	}
	h := s[0].Value.Float64Histogram()
	if prev := a.lastHist; prev != nil && len(prev.Counts) == len(h.Counts) {
		a.p99 = quantile(prev.Counts, h.Counts, h.Buckets, 0.99)
	}
	a.lastHist = &metrics.Float64Histogram{Counts: append([]uint64(nil), h.Counts...), Buckets: h.Buckets}
	a.sampled = now
}

// quantile is the q-quantile (upper bucket bound) of the counts added
// between prev and cur.
func quantile(prev, cur []uint64, buckets []float64, q float64) time.Duration {
	var total uint64
	for i := range cur {
		total += cur[i] - prev[i]
	}
	if total == 0 {
		return 0
	}
	want := uint64(math.Ceil(float64(total) * q))
	var seen uint64
	for i := range cur {
		seen += cur[i] - prev[i]
		if seen >= want {
			ub := buckets[i+1]
			if math.IsInf(ub, 1) {
				ub = buckets[i]
			}
			return time.Duration(ub * float64(time.Second))
		}
	}
	return 0
}

// retryAfter is the jittered wait a shed Hello is told: base × [0.5, 1.5),
// so the shed agents do not come back together.
func retryAfter(base time.Duration) time.Duration {
	return time.Duration(float64(base) * (0.5 + rand.Float64()))
}
