package metrics

import (
	"context"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tetherhq/tether/internal/version"
)

// GRPC holds the standard gRPC server metrics, with the names and labels
// of go-grpc-middleware's Prometheus provider (and of the community
// dashboards and alerts built on it):
//
//	grpc_server_started_total{grpc_type,grpc_service,grpc_method}
//	grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}
//	grpc_server_msg_received_total{grpc_type,grpc_service,grpc_method}
//	grpc_server_msg_sent_total{grpc_type,grpc_service,grpc_method}
//	grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method} (histogram)
//
// grpc_type is unary, client_stream, server_stream or bidi_stream. Method
// names come from the registered services only (grpc-go answers an unknown
// method before any interceptor runs), so the label sets are bounded.
type GRPC struct {
	started, handled, received, sent *prometheus.CounterVec
	latency                          *prometheus.HistogramVec
}

// NewGRPC creates the gRPC server metrics and registers them with reg.
func NewGRPC(reg prometheus.Registerer) *GRPC {
	labels := []string{"grpc_type", "grpc_service", "grpc_method"}
	g := &GRPC{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_started_total", Help: "Total number of RPCs started on the server.",
		}, labels),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_handled_total", Help: "Total number of RPCs completed on the server, regardless of success or failure.",
		}, append(labels, "grpc_code")),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_msg_received_total", Help: "Total number of RPC stream messages received on the server.",
		}, labels),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_msg_sent_total", Help: "Total number of gRPC stream messages sent by the server.",
		}, labels),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "grpc_server_handling_seconds", Help: "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, labels),
	}
	if reg != nil {
		reg.MustRegister(g.started, g.handled, g.received, g.sent, g.latency)
	}
	return g
}

// Initialize creates every series of s's registered methods at zero (the
// handled counter for every code), so that rates and alerts see a method
// before its first call.
func (g *GRPC) Initialize(s *grpc.Server) {
	for svc, info := range s.GetServiceInfo() {
		for _, m := range info.Methods {
			t := typeOf(m.IsClientStream, m.IsServerStream)
			g.started.WithLabelValues(t, svc, m.Name)
			g.received.WithLabelValues(t, svc, m.Name)
			g.sent.WithLabelValues(t, svc, m.Name)
			g.latency.WithLabelValues(t, svc, m.Name)
			for c := range uint32(17) {
				g.handled.WithLabelValues(t, svc, m.Name, codeName(c))
			}
		}
	}
}

func codeName(c uint32) string { return codes.Code(c).String() }

func typeOf(clientStream, serverStream bool) string {
	switch {
	case clientStream && serverStream:
		return "bidi_stream"
	case clientStream:
		return "client_stream"
	case serverStream:
		return "server_stream"
	}
	return "unary"
}

// splitMethod splits "/pkg.Service/Method".
func splitMethod(full string) (service, method string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", "unknown"
}

// Unary is a grpc.UnaryServerInterceptor recording every unary RPC.
func (g *GRPC) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	svc, m := splitMethod(info.FullMethod)
	g.started.WithLabelValues("unary", svc, m).Inc()
	g.received.WithLabelValues("unary", svc, m).Inc()
	start := time.Now()
	resp, err := handler(ctx, req)
	if err == nil {
		g.sent.WithLabelValues("unary", svc, m).Inc()
	}
	g.handled.WithLabelValues("unary", svc, m, status.Code(err).String()).Inc()
	g.latency.WithLabelValues("unary", svc, m).Observe(time.Since(start).Seconds())
	return resp, err
}

// Stream is a grpc.StreamServerInterceptor recording every stream, its
// messages and its end.
func (g *GRPC) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	svc, m := splitMethod(info.FullMethod)
	t := typeOf(info.IsClientStream, info.IsServerStream)
	g.started.WithLabelValues(t, svc, m).Inc()
	start := time.Now()
	err := handler(srv, &countingStream{ServerStream: ss,
		received: g.received.WithLabelValues(t, svc, m), sent: g.sent.WithLabelValues(t, svc, m)})
	g.handled.WithLabelValues(t, svc, m, status.Code(err).String()).Inc()
	g.latency.WithLabelValues(t, svc, m).Observe(time.Since(start).Seconds())
	return err
}

type countingStream struct {
	grpc.ServerStream
	received, sent prometheus.Counter
}

func (s *countingStream) SendMsg(m any) error {
	err := s.ServerStream.SendMsg(m)
	if err == nil {
		s.sent.Inc()
	}
	return err
}

func (s *countingStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.received.Inc()
	}
	return err
}

// NewBuildInfo registers tether_build_info{version,revision,goversion} = 1:
// the module version (internal/version), the VCS revision from the build
// info ("unknown" outside a checkout) and the Go version.
func NewBuildInfo(reg prometheus.Registerer) {
	rev := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				rev = s.Value
			}
		}
	}
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tether_build_info", Help: "A metric with a constant '1' value labeled by the version and revision Tether was built from, and the Go version.",
	}, []string{"version", "revision", "goversion"})
	g.WithLabelValues(version.Short(), rev, runtime.Version()).Set(1)
	if reg != nil {
		reg.MustRegister(g)
	}
}
