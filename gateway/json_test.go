package gateway_test

import (
	"encoding/json"
	"strings"
	"testing"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/gateway"
)

func TestShortLowercaseEnumsAreAcceptedInTheQuery(t *testing.T) {
	b := startBackend(t, "node-a")
	g := startGateway(t, gateway.Config{}, b)
	for q, want := range map[string]tetherv1.PresenceFilter{
		"presence=online":                 tetherv1.PresenceFilter_PRESENCE_FILTER_ONLINE,
		"presence=OFFLINE":                tetherv1.PresenceFilter_PRESENCE_FILTER_OFFLINE,
		"presence=PRESENCE_FILTER_ONLINE": tetherv1.PresenceFilter_PRESENCE_FILTER_ONLINE,
		"presence=2":                      tetherv1.PresenceFilter_PRESENCE_FILTER_OFFLINE,
	} {
		resp, body := do(t, "GET", g.url+"/v1/devices?"+q, "", "")
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", q, resp.StatusCode, body)
		}
		b.fleet.mu.Lock()
		got := b.fleet.lastList.GetPresence()
		b.fleet.mu.Unlock()
		if got != want {
			t.Errorf("%s: server got %v, want %v", q, got, want)
		}
	}
	resp, body := do(t, "GET", g.url+"/v1/devices?presence=sometimes", "", "")
	e := decodeError(t, body)
	if resp.StatusCode != 400 || *e.Message != `presence: "sometimes" is not one of online, offline` {
		t.Errorf("%d %s", resp.StatusCode, body)
	}
}

func TestDefaultValuesAreAlwaysPresent(t *testing.T) {
	b := startBackend(t, "node-a")
	g := startGateway(t, gateway.Config{}, b)
	// d-empty: the fake fleet's device with nothing set but its id.
	resp, body := do(t, "POST", g.url+"/v1/devices/d1:disconnect", jsonType, "{}")
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"leaseId", "node"} {
		if _, ok := m[k]; !ok {
			t.Errorf("%s missing from %s", k, body)
		}
	}
	resp, body = do(t, "GET", g.url+"/v1/devices/d1", "", "")
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if strings.Contains(string(body), "null") {
		t.Errorf("a null in %s", body)
	}
}

func TestGatewayErrorsAreShort(t *testing.T) {
	b := startBackend(t, "node-a")
	g := startGateway(t, gateway.Config{}, b)
	for _, tc := range []struct{ method, url, body, want string }{
		{"GET", "/v1/devices?pageSize=many", "", `page_size: "many" is not a number`},
		{"GET", "/v1/devices?pageSize=99999999999", "", `page_size: "99999999999" is out of range`},
		{"POST", "/v1/devices/d1:command", `{"name": 7}`, "request body, line 1 column 10: invalid value for string field name: 7"},
	} {
		ct := ""
		if tc.body != "" {
			ct = jsonType
		}
		resp, body := do(t, tc.method, g.url+tc.url, ct, tc.body)
		e := decodeError(t, body)
		if resp.StatusCode != 400 || *e.Message != tc.want {
			t.Errorf("%s %s: %d %s, want message %q", tc.method, tc.url, resp.StatusCode, body, tc.want)
		}
	}
}
