package audit

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// DefaultStreamKey is the Redis stream the audit records go to.
const DefaultStreamKey = "tether:audit"

// streamBuffer bounds the records waiting for Redis; more are dropped and
// counted (the log line is written anyway).
const streamBuffer = 1024

// StreamSink appends every audit and refusal line to a Redis stream, one
// entry per line with the line's fields, trimming entries older than the
// retention (XADD … MINID). Admins read it with XRANGE / XREVRANGE.
// Writes are asynchronous: a slow or absent Redis never delays a call.
type StreamSink struct {
	rdb     *redis.Client
	key     string
	keep    time.Duration
	log     *slog.Logger
	dropped prometheus.Counter
	failed  prometheus.Counter

	ch   chan []any
	done chan struct{}
	once sync.Once
}

// NewStreamSink connects to the Redis at url (redis://…) and starts the
// writer; retention must be positive. reg receives
// tether_audit_stream_dropped_total and tether_audit_stream_errors_total.
func NewStreamSink(url, key string, retention time.Duration, log *slog.Logger, reg prometheus.Registerer) (*StreamSink, error) {
	if retention <= 0 {
		return nil, fmt.Errorf("audit stream: retention %v is not positive", retention)
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("audit stream: %w", err)
	}
	if key == "" {
		key = DefaultStreamKey
	}
	if log == nil {
		log = slog.Default()
	}
	s := &StreamSink{
		rdb: redis.NewClient(opts), key: key, keep: retention, log: log,
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_audit_stream_dropped_total",
			Help: "Audit records not written to the Redis stream because too many were waiting (the log has them)."}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_audit_stream_errors_total",
			Help: "Audit records the Redis stream refused or that could not reach Redis (the log has them)."}),
		ch: make(chan []any, streamBuffer), done: make(chan struct{}),
	}
	if reg != nil {
		reg.MustRegister(s.dropped, s.failed)
	}
	go s.run()
	return s, nil
}

// add queues one record: msg and its key/value attributes.
func (s *StreamSink) add(msg string, attrs []any) {
	if s == nil {
		return
	}
	rec := make([]any, 0, len(attrs)+4)
	rec = append(rec, "msg", msg, "time", time.Now().UTC().Format(time.RFC3339Nano))
	for i := 0; i+1 < len(attrs); i += 2 {
		rec = append(rec, fmt.Sprint(attrs[i]), fmt.Sprint(attrs[i+1]))
	}
	select {
	case s.ch <- rec:
	default:
		s.dropped.Inc()
	}
}

func (s *StreamSink) run() {
	defer close(s.done)
	var lastWarn time.Time
	for rec := range s.ch {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		minID := strconv.FormatInt(time.Now().Add(-s.keep).UnixMilli(), 10)
		err := s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.key, MinID: minID, Values: rec}).Err()
		cancel()
		if err != nil {
			s.failed.Inc()
			if time.Since(lastWarn) > time.Minute {
				lastWarn = time.Now()
				s.log.Warn("audit stream: cannot write to Redis; the audit log lines are complete", "key", s.key, "err", err)
			}
		}
	}
}

// Close writes what is queued and disconnects.
func (s *StreamSink) Close() error {
	if s == nil {
		return nil
	}
	s.once.Do(func() { close(s.ch) })
	<-s.done
	return s.rdb.Close()
}
