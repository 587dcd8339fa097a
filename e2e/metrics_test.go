package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tetherhq/tether/internal/blackhole"
)

// scrape is one parsed /metrics exposition, by family name.
type scrape map[string]*dto.MetricFamily

// scrapeMetrics fetches and parses a Prometheus text exposition.
func scrapeMetrics(url string) (scrape, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", url, err)
	}
	return fams, nil
}

func mustScrape(t *testing.T, url string) scrape {
	t.Helper()
	s, err := scrapeMetrics(url)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// value sums the samples of name whose labels include labels (name, value
// pairs): counter and gauge values, histogram sample counts. A name ending in
// _count or _sum reads that part of a histogram. Absent samples count 0.
func (s scrape) value(name string, labels ...string) float64 {
	part := ""
	mf := s[name]
	if mf == nil {
		for _, suffix := range []string{"_count", "_sum"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && s[base] != nil {
				mf, part = s[base], suffix
			}
		}
	}
	if mf == nil {
		return 0
	}
	var sum float64
	for _, m := range mf.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		switch {
		case m.GetHistogram() != nil && part == "_sum":
			sum += m.GetHistogram().GetSampleSum()
		case m.GetHistogram() != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		case m.GetUntyped() != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// labelValues returns every label value in the scrape.
func (s scrape) labelValues() []string {
	var out []string
	for _, mf := range s {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				out = append(out, mf.GetName()+"{"+l.GetName()+"="+l.GetValue()+"}")
			}
		}
	}
	return out
}

// delta is one expected change of a sample between two scrapes.
type delta struct {
	name   string
	labels []string
	by     float64
}

func (d delta) String() string {
	return fmt.Sprintf("%s%v", d.name, d.labels)
}

// waitDeltas polls url until every delta holds against before, and returns
// the scrape that satisfied them.
func waitDeltas(t *testing.T, url string, before scrape, deltas ...delta) scrape {
	t.Helper()
	var now scrape
	eventually(t, 15*time.Second, func() error {
		var err error
		if now, err = scrapeMetrics(url); err != nil {
			return err
		}
		var off []string
		for _, d := range deltas {
			if got := now.value(d.name, d.labels...) - before.value(d.name, d.labels...); got != d.by {
				off = append(off, fmt.Sprintf("%v moved by %v, want %v", d, got, d.by))
			}
		}
		if len(off) > 0 {
			return fmt.Errorf("%s", strings.Join(off, "; "))
		}
		return nil
	})
	return now
}

// TestMetricsFollowAnEndToEndScenario drives a real server through connect,
// command, takeover and power loss, and checks that /metrics moved exactly as
// each step should; then the same for a tether-gateway started with
// TETHER_METRICS.
func TestMetricsFollowAnEndToEndScenario(t *testing.T) {
	grpcAddr, httpAddr, metricsAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	start(t, "tether-server", "--listen", grpcAddr, "--http", httpAddr, "--metrics", metricsAddr,
		"--ping-interval", "2s", "--ping-timeout", "1s")
	waitListening(t, grpcAddr)
	waitListening(t, httpAddr)
	waitListening(t, metricsAddr)
	base, metrics := "http://"+httpAddr, "http://"+metricsAddr+"/metrics"
	s0 := mustScrape(t, metrics)
	if s0["go_goroutines"] == nil || s0["process_start_time_seconds"] == nil {
		t.Errorf("the Go and process collectors are missing from %s", metrics)
	}

	// Connect.
	first := start(t, "tether-agent", "--server", grpcAddr, "--device-id", "met-1", "--config", writeAgentConfig(t, ""))
	waitOnline(t, base, "met-1", 20*time.Second)
	s1 := waitDeltas(t, metrics, s0,
		delta{"tether_connects_total", nil, 1},
		delta{"tether_sessions", []string{"mode", "app_pong"}, 1},
		delta{"tether_disconnects_total", nil, 0})

	// A command through the JSON API.
	code, body := post(t, base+"/v1/devices/met-1:command", `{"name": "echo", "args": ["metrics"]}`)
	if code != 200 || body["output"] != "metrics\n" {
		t.Fatalf("command: %d %v", code, body)
	}
	waitDeltas(t, metrics, s1,
		delta{"tether_commands_total", []string{"outcome", "OK"}, 1},
		delta{"tether_commands_total", nil, 1},
		delta{"tether_command_duration_seconds_count", nil, 1},
		delta{"grpc_server_handled_total", []string{"grpc_service", "tether.v1.DeviceService", "grpc_method", "SendCommand", "grpc_code", "OK", "grpc_type", "unary"}, 1})

	// Pings are answered and timed (one every ~2s).
	eventually(t, 10*time.Second, func() error {
		s, err := scrapeMetrics(metrics)
		if err != nil {
			return err
		}
		if n := s.value("tether_ping_rtt_seconds_count"); n == 0 {
			return fmt.Errorf("no Ping RTT observed yet")
		} else if avg := s.value("tether_ping_rtt_seconds_sum") / n; avg <= 0 || avg > 1 {
			return fmt.Errorf("mean Ping RTT %vs on loopback", avg)
		}
		return nil
	})

	// Takeover: the device comes back (a second agent with the same id)
	// while its old connection still looks alive (the first agent frozen).
	sTk := mustScrape(t, metrics)
	first.signal(syscall.SIGSTOP)
	start(t, "tether-agent", "--server", grpcAddr, "--device-id", "met-1", "--config", writeAgentConfig(t, ""))
	waitDeltas(t, metrics, sTk,
		delta{"tether_takeovers_total", nil, 1},
		delta{"tether_disconnects_total", []string{"reason", "replaced"}, 1},
		delta{"tether_disconnects_total", nil, 1},
		delta{"tether_connects_total", nil, 1},
		delta{"tether_sessions", []string{"mode", "app_pong"}, 0})
	first.signal(syscall.SIGKILL)
	_ = first.wait(t, 10*time.Second)

	// Power loss: an agent behind a proxy that goes silent.
	proxy, err := blackhole.NewProxy(grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	lost := start(t, "tether-agent", "--server", proxy.Addr(), "--device-id", "met-bh", "--config", writeAgentConfig(t, ""))
	waitOnline(t, base, "met-bh", 20*time.Second)
	sBh := waitDeltas(t, metrics, sTk, delta{"tether_sessions", []string{"mode", "app_pong"}, 1})
	lost.signal(syscall.SIGSTOP)
	proxy.Cut()
	sAfter := waitDeltas(t, metrics, sBh,
		delta{"tether_disconnects_total", []string{"reason", "ping_timeout"}, 1},
		delta{"tether_disconnects_total", nil, 1},
		delta{"tether_offline_detection_seconds_count", nil, 1},
		delta{"tether_sessions", []string{"mode", "app_pong"}, -1})
	lost.signal(syscall.SIGKILL)
	// The bound the product promises: ping-interval + ping-timeout (3s
	// here), with a second of slack for a loaded machine.
	if d := sAfter.value("tether_offline_detection_seconds_sum") - sBh.value("tether_offline_detection_seconds_sum"); d <= 0 || d > 4 {
		t.Errorf("offline detection took %.2fs, want within ping-interval + ping-timeout (3s)", d)
	}
	for _, lv := range sAfter.labelValues() {
		if strings.Contains(lv, "met-") {
			t.Errorf("a server metric label carries a device id: %s", lv)
		}
	}

	t.Run("gateway", func(t *testing.T) {
		gwAddr, gwMetricsAddr := freeAddr(t), freeAddr(t)
		t.Setenv("TETHER_METRICS", gwMetricsAddr) // the variable for --metrics
		start(t, "tether-gateway", "--listen", gwAddr, "--server", grpcAddr)
		waitReady(t, "http://"+gwAddr)
		waitListening(t, gwMetricsAddr)
		gwMetrics := "http://" + gwMetricsAddr + "/metrics"
		g0 := mustScrape(t, gwMetrics)
		for _, name := range []string{"go_goroutines", "process_start_time_seconds", "tether_gateway_watchers"} {
			if g0[name] == nil {
				t.Errorf("%s missing from the gateway's /metrics", name)
			}
		}
		if _, err := getDevice("http://"+gwAddr, "met-1"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get("http://" + gwAddr + "/v1/nothing/met-1")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("GET /v1/nothing/met-1: %d, want 404", resp.StatusCode)
		}
		g1 := waitDeltas(t, gwMetrics, g0,
			delta{"tether_gateway_requests_total", []string{"route", "/v1/devices/{device_id}", "code", "200"}, 1},
			delta{"tether_gateway_requests_total", []string{"route", "other", "code", "404"}, 1},
			delta{"tether_gateway_request_duration_seconds_count", []string{"route", "/v1/devices/{device_id}"}, 1})
		for _, lv := range g1.labelValues() {
			if strings.Contains(lv, "met-") || strings.Contains(lv, "nothing") {
				t.Errorf("a gateway metric label carries a raw path or device id: %s", lv)
			}
		}
	})
}
