package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// GRPC counts handled RPCs by method and code, and their latency. Method
// names come from the registered services only, so the label set is bounded.
type GRPC struct {
	handled *prometheus.CounterVec
	latency *prometheus.HistogramVec
}

// NewGRPC creates the gRPC server metrics and registers them with reg.
func NewGRPC(reg prometheus.Registerer) *GRPC {
	g := &GRPC{
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_grpc_server_handled_total", Help: "RPCs completed on the server, by full method and gRPC code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tether_grpc_server_handling_seconds", Help: "Time to complete unary RPCs (streams are excluded: they last for days).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"method"}),
	}
	if reg != nil {
		reg.MustRegister(g.handled, g.latency)
	}
	return g
}

// Unary is a grpc.UnaryServerInterceptor recording every unary RPC.
func (g *GRPC) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	g.handled.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	g.latency.WithLabelValues(info.FullMethod).Observe(time.Since(start).Seconds())
	return resp, err
}

// Stream is a grpc.StreamServerInterceptor recording every stream's end.
func (g *GRPC) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	err := handler(srv, ss)
	g.handled.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	return err
}
