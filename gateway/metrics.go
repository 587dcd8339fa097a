package gateway

import (
	"context"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
)

// otherRoute is the route label of a request that matched no route (404,
// 405, a CORS preflight, a path that is not UTF-8). Raw paths never become
// label values: they hold device ids and anything a client sends.
const otherRoute = "other"

// Metrics are the gateway's Prometheus collectors. Their label values are
// bounded: route is one of the gateway's route patterns
// ("/v1/devices/{device_id}:command") or "other", code is the HTTP status.
// A nil *Metrics records nothing.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	watchers prometheus.Gauge
}

// NewMetrics creates the gateway's collectors and registers them with reg
// (if non-nil). Pass the result as Config.Metrics; one Metrics may serve
// several gateways.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_gateway_requests_total",
			Help: "HTTP requests answered by the gateway, by route pattern (\"other\" when none matched) and HTTP status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tether_gateway_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route pattern (a watch stream counts when it ends).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route"}),
		watchers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tether_gateway_watchers",
			Help: "Open /v1/devices:watch streams on this gateway.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.watchers)
	}
	return m
}

// observe records one answered request.
func (m *Metrics) observe(route string, status int, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}

// watcherDelta adds d to the open watch stream count.
func (m *Metrics) watcherDelta(d float64) {
	if m != nil {
		m.watchers.Add(d)
	}
}

// requestRoute carries the matched route of a request from the mux's
// middleware back out to serveHTTP. Both run on the request's goroutine.
type requestRoute struct{ pattern string }

type requestRouteKey struct{}

// withRequestRoute returns r with an empty requestRoute for the route
// middleware to fill in.
func withRequestRoute(r *http.Request) (*http.Request, *requestRoute) {
	rr := &requestRoute{}
	return r.WithContext(context.WithValue(r.Context(), requestRouteKey{}, rr)), rr
}

// patternCapture is a capture in a grpc-gateway pattern string:
// "{device_id=*}" becomes "{device_id}".
var patternCapture = regexp.MustCompile(`\{([^{}=]+)=\*\}`)

// routePattern is the label for a grpc-gateway pattern, e.g.
// "/v1/devices/{device_id}:command".
func routePattern(p runtime.Pattern) string {
	return patternCapture.ReplaceAllString(p.String(), "{$1}")
}

// markRoute is a runtime.Middleware recording the route grpc-gateway matched,
// for the request's metrics and log line. It runs after checkMethod, so a
// request answered 405 there stays "other".
func (g *Gateway) markRoute(next runtime.HandlerFunc) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		if rr, ok := r.Context().Value(requestRouteKey{}).(*requestRoute); ok {
			if pat, ok := runtime.HTTPPattern(r.Context()); ok {
				rr.pattern = routePattern(pat)
			}
		}
		next(w, r, params)
	}
}

// label is the route label value.
func (rr *requestRoute) label() string {
	if rr.pattern == "" {
		return otherRoute
	}
	return rr.pattern
}
