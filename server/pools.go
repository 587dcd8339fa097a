package server

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tetherhq/tether/server/deviceapi"
)

// poolStatser is a store with connection pools (redisstore.Store).
type poolStatser interface {
	PoolStats() map[string]*redis.PoolStats
}

var (
	poolWaitsDesc = prometheus.NewDesc("tether_redis_pool_waits_total",
		"Times a Redis command waited for a free connection of its pool (lease: lease writes and node renewal; read: API reads; block: event stream reads).", []string{"pool"}, nil)
	poolWaitSecondsDesc = prometheus.NewDesc("tether_redis_pool_wait_seconds_total",
		"Total time Redis commands waited for a free connection of their pool.", []string{"pool"}, nil)
	poolTimeoutsDesc = prometheus.NewDesc("tether_redis_pool_timeouts_total",
		"Redis commands that gave up waiting for a connection of their pool.", []string{"pool"}, nil)
	poolConnsDesc = prometheus.NewDesc("tether_redis_pool_connections",
		"Open connections of each Redis pool.", []string{"pool"}, nil)
)

// poolCollector exports the Redis store's per-pool statistics.
type poolCollector struct{ p poolStatser }

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- poolWaitsDesc
	ch <- poolWaitSecondsDesc
	ch <- poolTimeoutsDesc
	ch <- poolConnsDesc
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	for name, st := range c.p.PoolStats() {
		ch <- prometheus.MustNewConstMetric(poolWaitsDesc, prometheus.CounterValue, float64(st.WaitCount), name)
		ch <- prometheus.MustNewConstMetric(poolWaitSecondsDesc, prometheus.CounterValue, float64(st.WaitDurationNs)/1e9, name)
		ch <- prometheus.MustNewConstMetric(poolTimeoutsDesc, prometheus.CounterValue, float64(st.Timeouts), name)
		ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(st.TotalConns), name)
	}
}

func newPerIPRefused(reg *prometheus.Registry) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_conns_refused_per_ip_total",
		Help: "Connections closed at accept because their source IP already held --max-conns-per-ip (listener: grpc, http).",
	}, []string{"listener"})
	reg.MustRegister(c)
	return c
}

// keyName names the API key of a call for the per-key watch cap ("" without
// keys or without a known key).
func (s *security) keyName(ctx context.Context) string {
	if s.policy.APIKeys.Len() == 0 {
		return ""
	}
	k, ok := s.policy.APIKeys.Lookup(deviceapi.BearerKey(ctx))
	if !ok {
		return ""
	}
	return k.Name
}
