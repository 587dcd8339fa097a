package gateway_test

import (
	"bufio"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tetherhq/tether/gateway"
)

// gathered is one registry scrape: "name{k=v,...}" -> value (counters,
// gauges, histogram sample counts).
func gathered(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(labels)
			key := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

func TestMetricsCountRequestsByRoutePatternNeverByPath(t *testing.T) {
	b := startBackend(t, "node-a")
	reg := prometheus.NewRegistry()
	g := startGateway(t, gateway.Config{Metrics: gateway.NewMetrics(reg)}, b)

	requests := []struct {
		method, path, contentType, body string
		want                            int
	}{
		{"GET", "/v1/devices/d7", "", "", 200},
		{"GET", "/v1/devices/d8", "", "", 200},
		{"GET", "/v1/devices", "", "", 200},
		{"POST", "/v1/devices/d1:command", "application/json", `{"name": "uptime"}`, 200},
		{"POST", "/v1/devices/d1:command", "text/plain", `{"name": "uptime"}`, 415},
		{"GET", "/v1/devices/d1:command", "", "", 405},
		{"GET", "/secret-device-id/nothing-here", "", "", 404},
		{"GET", "/openapi.json", "", "", 200},
	}
	for _, r := range requests {
		resp, body := do(t, r.method, g.url+r.path, r.contentType, r.body)
		if resp.StatusCode != r.want {
			t.Fatalf("%s %s: %d %s, want %d", r.method, r.path, resp.StatusCode, body, r.want)
		}
	}

	got := gathered(t, reg)
	for key, want := range map[string]float64{
		`tether_gateway_requests_total{code=200,route=/v1/devices/{device_id}}`:          2,
		`tether_gateway_requests_total{code=200,route=/v1/devices}`:                      1,
		`tether_gateway_requests_total{code=200,route=/v1/devices/{device_id}:command}`:  1,
		`tether_gateway_requests_total{code=415,route=/v1/devices/{device_id}:command}`:  1,
		`tether_gateway_requests_total{code=405,route=other}`:                            1,
		`tether_gateway_requests_total{code=404,route=other}`:                            1,
		`tether_gateway_requests_total{code=200,route=/openapi.json}`:                    1,
		`tether_gateway_request_duration_seconds{route=/v1/devices/{device_id}}`:         2,
		`tether_gateway_request_duration_seconds{route=/v1/devices/{device_id}:command}`: 2,
		`tether_gateway_request_duration_seconds{route=other}`:                           2,
		`tether_gateway_watchers{}`:                                                      0,
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v", key, got[key], want)
		}
	}
	for key := range got {
		for _, leak := range []string{"d7", "d8", "d1", "secret"} {
			if strings.Contains(key, leak) {
				t.Errorf("label value leaks a path or device id: %s", key)
			}
		}
	}

	// The request log line names the same route.
	var routes []string
	for _, line := range g.logs.lines(t) {
		if line["msg"] == "http request" && line["path"] == "/v1/devices/d7" {
			routes = append(routes, fmt.Sprint(line["route"]))
		}
	}
	if len(routes) != 1 || routes[0] != "/v1/devices/{device_id}" {
		t.Errorf("log line routes for /v1/devices/d7 = %q", routes)
	}
}

func TestMetricsTrackOpenWatchStreams(t *testing.T) {
	b := startBackend(t, "node-a")
	reg := prometheus.NewRegistry()
	g := startGateway(t, gateway.Config{Metrics: gateway.NewMetrics(reg)}, b)

	req, _ := http.NewRequestWithContext(t.Context(), "GET", g.url+"/v1/devices:watch?afterEventId=hold", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readLine(t, bufio.NewReader(resp.Body)) // the stream is open
	if got := gathered(t, reg)["tether_gateway_watchers{}"]; got != 1 {
		t.Errorf("watchers with one open stream = %v, want 1", got)
	}
	resp.Body.Close()
	eventually(t, "the watch stream to end", func() bool {
		m := gathered(t, reg)
		return m["tether_gateway_watchers{}"] == 0 &&
			m["tether_gateway_request_duration_seconds{route=/v1/devices:watch}"] == 1
	})
}

func TestNilMetricsRecordNothing(t *testing.T) {
	b := startBackend(t, "node-a")
	g := startGateway(t, gateway.Config{}, b)
	if resp, body := do(t, "GET", g.url+"/v1/devices/d7", "", ""); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
}
