package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/tetherhq/tether/internal/testredis"
)

// waitReady waits until a gateway's /readyz answers 200: it reaches a
// SERVING server.
func waitReady(t *testing.T, base string) {
	t.Helper()
	eventually(t, 20*time.Second, func() error {
		var v map[string]any
		return getJSON(base+"/readyz", &v)
	})
}

// dashboardPanel is the part of a Grafana panel the test reads.
type dashboardPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"` // a row's panels
}

type dashboard struct {
	SchemaVersion int              `json:"schemaVersion"`
	Title         string           `json:"title"`
	UID           string           `json:"uid"`
	Panels        []dashboardPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

// metricName is a Tether or standard gRPC server metric name in a PromQL
// expression.
var metricName = regexp.MustCompile(`\b(?:tether|grpc_server)_[a-zA-Z0-9_]+`)

// loadDashboard parses docs/grafana-dashboard.json, checks its structure, and
// returns every Tether metric name its queries reference, with the panel
// titles that use each.
func loadDashboard(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile("../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("docs/grafana-dashboard.json: %v", err)
	}
	if d.SchemaVersion < 36 || d.SchemaVersion > 41 {
		t.Errorf("schemaVersion %d, want a current one (~39)", d.SchemaVersion)
	}
	if d.Title == "" || d.UID == "" {
		t.Errorf("dashboard title %q, uid %q: both are needed", d.Title, d.UID)
	}
	vars := map[string]string{}
	refs := map[string][]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type == "datasource" && string(v.Query) != `"prometheus"` {
			t.Errorf("datasource variable %s queries %s, want \"prometheus\"", v.Name, v.Query)
		}
		for _, m := range metricName.FindAllString(v.Definition, -1) {
			refs[m] = append(refs[m], "variable $"+v.Name)
		}
	}
	if vars["datasource"] != "datasource" {
		t.Fatalf("no Prometheus datasource variable named datasource: %v", vars)
	}

	ids := map[int]string{}
	var walk func([]dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			if prev, dup := ids[p.ID]; dup || p.ID == 0 {
				t.Errorf("panel %q: id %d is missing or also used by %q", p.Title, p.ID, prev)
			}
			ids[p.ID] = p.Title
			if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
				t.Errorf("panel %q has no gridPos", p.Title)
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: datasource %+v, want the ${datasource} variable", p.Title, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no queries", p.Title)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q, query %s: empty expr", p.Title, tg.RefID)
					continue
				}
				if err := balanced(tg.Expr); err != nil {
					t.Errorf("panel %q, query %s: %v: %s", p.Title, tg.RefID, err, tg.Expr)
				}
				names := metricName.FindAllString(tg.Expr, -1)
				if len(names) == 0 {
					t.Errorf("panel %q, query %s names no tether_ metric: %s", p.Title, tg.RefID, tg.Expr)
				}
				for _, m := range names {
					refs[m] = append(refs[m], p.Title)
				}
			}
		}
	}
	walk(d.Panels)
	return refs
}

// balanced checks the brackets of a PromQL expression and that the
// dashboard's variables are used in label matchers only as regexps.
func balanced(expr string) error {
	var stack []rune
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	inString := false
	for _, r := range expr {
		switch {
		case r == '"':
			inString = !inString
		case inString:
		case r == '(' || r == '[' || r == '{':
			stack = append(stack, r)
		case pairs[r] != 0:
			if len(stack) == 0 || stack[len(stack)-1] != pairs[r] {
				return fmt.Errorf("unbalanced %q", r)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if inString || len(stack) > 0 {
		return fmt.Errorf("unclosed %q", stack)
	}
	if strings.Contains(expr, `="$`) {
		return fmt.Errorf(`a multi-value variable needs =~, not =`)
	}
	return nil
}

// checkDashboardMetric reports why name is not served by a scrape: a name
// must be a family of that scrape, or the _bucket, _sum or _count series of a
// histogram family; a name ending in _total must be a counter.
func checkDashboardMetric(s scrape, name string) error {
	if mf := s[name]; mf != nil {
		if strings.HasSuffix(name, "_total") && mf.GetType() != dto.MetricType_COUNTER {
			return fmt.Errorf("%s is a %s, not a counter", name, mf.GetType())
		}
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			return fmt.Errorf("%s is a histogram: query its _bucket, _sum or _count", name)
		}
		return nil
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if mf := s[base]; mf != nil {
				if mf.GetType() != dto.MetricType_HISTOGRAM {
					return fmt.Errorf("%s: %s is a %s, not a histogram", name, base, mf.GetType())
				}
				return nil
			}
		}
	}
	return fmt.Errorf("%s is not exported", name)
}

// TestDashboardQueriesOnlyMetricsTheBinariesExport checks every metric name
// the Grafana dashboard queries against live scrapes of a replica and a
// gateway. Labelled counters exist only once they have counted something, so
// the test first drives the cluster (two replicas sharing Redis) through what
// the panels show: a session, a command, a watch, a takeover across replicas
// (stale writes) and a Redis outage (registry errors).
func TestDashboardQueriesOnlyMetricsTheBinariesExport(t *testing.T) {
	refs := loadDashboard(t)
	for _, want := range []string{
		"tether_sessions", "tether_offline_detection_seconds_bucket", "tether_disconnects_total",
		"tether_command_duration_seconds_bucket", "tether_commands_total", "tether_ping_rtt_seconds_bucket",
		"tether_registry_stale_writes_total", "tether_registry_errors_total", "tether_registry_remirrors_total",
		"tether_watchers", "grpc_server_handled_total", "grpc_server_handling_seconds_bucket",
	} {
		if len(refs[want]) == 0 {
			t.Errorf("no panel queries %s", want)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	redis := testredis.Start(t)
	g1, h1, m1, g2 := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	common := []string{"--redis", redis.URL(), "--ping-interval", "2s", "--ping-timeout", "1s", "--mirror-interval", "500ms", "--lease-ttl", "3s"}
	start(t, "tether-server", append([]string{"--listen", g1, "--http", h1, "--metrics", m1, "--node", "dash-r1"}, common...)...)
	start(t, "tether-server", append([]string{"--listen", g2, "--node", "dash-r2"}, common...)...)
	for _, a := range []string{g1, h1, m1, g2} {
		waitListening(t, a)
	}
	gw, gwm := freeAddr(t), freeAddr(t)
	start(t, "tether-gateway", "--listen", gw, "--server", g1, "--metrics", gwm)
	waitReady(t, "http://"+gw)
	waitListening(t, gwm)
	serverMetrics, gatewayMetrics := "http://"+m1+"/metrics", "http://"+gwm+"/metrics"

	// A session on r1, a command and a watch through the gateway.
	first := start(t, "tether-agent", "--server", g1, "--device-id", "dash-1", "--config", writeAgentConfig(t, ""))
	waitOnline(t, "http://"+h1, "dash-1", 20*time.Second)
	if code, body := post(t, "http://"+gw+"/v1/devices/dash-1:command", `{"name": "echo", "args": ["dashboard"]}`); code != 200 {
		t.Fatalf("command: %d %v", code, body)
	}
	resp, err := http.Get("http://" + gw + "/v1/devices:watch?includeSnapshot=true")
	if err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || !strings.Contains(line, "dash-1") {
		t.Fatalf("watch: %q, %v", line, err)
	}
	resp.Body.Close()

	// The device comes back on r2 while its r1 connection still looks
	// alive: r1's next fenced write is refused, and it ends the session.
	first.signal(syscall.SIGSTOP)
	start(t, "tether-agent", "--server", g2, "--device-id", "dash-1", "--config", writeAgentConfig(t, ""))
	eventually(t, 15*time.Second, func() error {
		s, err := scrapeMetrics(serverMetrics)
		if err != nil {
			return err
		}
		if s.value("tether_registry_stale_writes_total") == 0 || s.value("tether_disconnects_total") == 0 {
			return fmt.Errorf("r1 has not yet refused a stale write and ended the replaced session")
		}
		return nil
	})
	first.signal(syscall.SIGKILL)

	// Redis goes away: r1's registry renewals fail.
	redis.Stop()
	var server scrape
	eventually(t, 15*time.Second, func() error {
		var err error
		if server, err = scrapeMetrics(serverMetrics); err != nil {
			return err
		}
		if server.value("tether_registry_errors_total") == 0 {
			return fmt.Errorf("no registry error counted yet")
		}
		return nil
	})
	redis.Restart() // so that the replicas drain quickly at the end
	gateway := mustScrape(t, gatewayMetrics)

	names := make([]string, 0, len(refs))
	for n := range refs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		s, from := server, "tether-server"
		if strings.HasPrefix(name, "tether_gateway_") {
			s, from = gateway, "tether-gateway"
		}
		if err := checkDashboardMetric(s, name); err != nil {
			t.Errorf("%s (in %s), checked against %s --metrics: %v", name, strings.Join(slices.Compact(refs[name]), ", "), from, err)
		}
	}
	t.Logf("%d metric names checked against live scrapes: %s", len(names), strings.Join(names, " "))
}
