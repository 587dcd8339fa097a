package metrics

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestStandardGRPCMetricNamesAndLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := NewGRPC(reg)
	info := &grpc.UnaryServerInfo{FullMethod: "/tether.v1.DeviceService/GetDevice"}
	_, _ = g.Unary(context.Background(), nil, info, func(context.Context, any) (any, error) { return "ok", nil })
	_, _ = g.Unary(context.Background(), nil, info, func(context.Context, any) (any, error) {
		return nil, status.Error(codes.NotFound, "device d9 not found")
	})
	sinfo := &grpc.StreamServerInfo{FullMethod: "/tether.v1.AgentService/Connect", IsClientStream: true, IsServerStream: true}
	_ = g.Stream(nil, nil, sinfo, func(any, grpc.ServerStream) error { return errors.New("boom") })

	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			got[mf.GetName()+"{"+strings.Join(ls, ",")+"}"] = m.GetCounter().GetValue()
		}
	}
	for k, v := range map[string]float64{
		"grpc_server_handled_total{grpc_code=NotFound,grpc_method=GetDevice,grpc_service=tether.v1.DeviceService,grpc_type=unary}":   1,
		"grpc_server_handled_total{grpc_code=OK,grpc_method=GetDevice,grpc_service=tether.v1.DeviceService,grpc_type=unary}":         1,
		"grpc_server_handled_total{grpc_code=Unknown,grpc_method=Connect,grpc_service=tether.v1.AgentService,grpc_type=bidi_stream}": 1,
		"grpc_server_started_total{grpc_method=Connect,grpc_service=tether.v1.AgentService,grpc_type=bidi_stream}":                   1,
		"grpc_server_started_total{grpc_method=GetDevice,grpc_service=tether.v1.DeviceService,grpc_type=unary}":                      2,
		"grpc_server_msg_sent_total{grpc_method=GetDevice,grpc_service=tether.v1.DeviceService,grpc_type=unary}":                     1,
		"grpc_server_msg_received_total{grpc_method=GetDevice,grpc_service=tether.v1.DeviceService,grpc_type=unary}":                 2,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

func TestBuildInfo(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewBuildInfo(reg)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || mfs[0].GetName() != "tether_build_info" || mfs[0].GetMetric()[0].GetGauge().GetValue() != 1 {
		t.Fatalf("%v %v", mfs, err)
	}
	labels := map[string]string{}
	for _, l := range mfs[0].GetMetric()[0].GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if labels["version"] == "" || labels["revision"] == "" || !strings.HasPrefix(labels["goversion"], "go") {
		t.Fatalf("labels %v", labels)
	}
}
