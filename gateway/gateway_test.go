package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/gateway"
)

const jsonType = "application/json"

func TestListDevicesAnswersCamelCaseJSONAndParsesQueryParameters(t *testing.T) {
	b := startBackend(t, "node-a")
	g := startGateway(t, gateway.Config{}, b)

	for _, query := range []string{
		"pageSize=2&pageToken=p1&presence=PRESENCE_FILTER_ONLINE&labelSelector=site%3Dlab",
		"page_size=2&page_token=p1&presence=PRESENCE_FILTER_ONLINE&label_selector=site%3Dlab",
	} {
		resp, body := do(t, "GET", g.url+"/v1/devices?"+query, "", "")
		if resp.StatusCode != 200 {
			t.Fatalf("GET /v1/devices?%s: %d %s", query, resp.StatusCode, body)
		}
		if ct := resp.Header.Get("Content-Type"); ct != jsonType {
			t.Errorf("Content-Type = %q", ct)
		}
		var got struct {
			Devices []struct {
				DeviceID string `json:"deviceId"`
				Online   bool   `json:"online"`
				Info     struct {
					IPAddresses []string `json:"ipAddresses"`
				} `json:"info"`
				Session struct {
					LeaseID      string `json:"leaseId"`
					ConnectedAt  string `json:"connectedAt"`
					LivenessMode string `json:"livenessMode"`
				} `json:"session"`
			} `json:"devices"`
			NextPageToken string `json:"nextPageToken"`
		}
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Devices) != 2 || got.Devices[0].DeviceID != "d1" || !got.Devices[0].Online ||
			got.NextPageToken != "page-2" || got.Devices[0].Info.IPAddresses[0] != "10.0.0.7" ||
			got.Devices[0].Session.LeaseID != "7" || got.Devices[0].Session.ConnectedAt != "2025-01-02T03:04:05Z" ||
			got.Devices[0].Session.LivenessMode != "LIVENESS_MODE_APP_PONG" {
			t.Errorf("unexpected body %s", body)
		}
		if strings.Contains(string(body), "device_id") || strings.Contains(string(body), "next_page_token") {
			t.Errorf("body uses proto field names: %s", body)
		}

		b.fleet.mu.Lock()
		req := b.fleet.lastList
		b.fleet.mu.Unlock()
		if req.GetPageSize() != 2 || req.GetPageToken() != "p1" || req.GetPresence() != tetherv1.PresenceFilter_PRESENCE_FILTER_ONLINE || req.GetLabelSelector() != "site=lab" {
			t.Errorf("server got %v from query %s", req, query)
		}
	}
}

func TestGetDeviceReturnsTheDevice(t *testing.T) {
	b := startBackend(t, "node-a")
	g := startGateway(t, gateway.Config{}, b)

	resp, body := do(t, "GET", g.url+"/v1/devices/d7", "", "")
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var got struct {
		Device struct {
			DeviceID string            `json:"deviceId"`
			Info     map[string]any    `json:"info"`
			Labels   map[string]string `json:"labels"`
		} `json:"device"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Device.DeviceID != "d7" || got.Device.Info["hostname"] != "host-d7" {
		t.Errorf("unexpected body %s", body)
	}
}

func TestSendCommandDecodesTheBodyAndTheDeviceIdFromThePath(t *testing.T) {
	b := startBackend(t, "node-a")
	g := startGateway(t, gateway.Config{}, b)

	resp, body := do(t, "POST", g.url+"/v1/devices/d1:command", "application/json; charset=utf-8",
		`{"name": "uptime", "args": ["-p", "--since"], "timeout": "5s"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"commandId": "cmd-1", "leaseId": "7", "node": "node-a", "output": "uptime -p --since", "duration": "1.500s"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (body %s)", k, got[k], v, body)
		}
	}
	b.fleet.mu.Lock()
	req := b.fleet.lastCommand
	b.fleet.mu.Unlock()
	if req.GetDeviceId() != "d1" || req.GetName() != "uptime" || !slices.Equal(req.GetArgs(), []string{"-p", "--since"}) || req.GetTimeout().AsDuration() != 5*time.Second {
		t.Errorf("server got %v", req)
	}
}

func TestDisconnectDeviceAcceptsAnEmptyOrPartialBody(t *testing.T) {
	b := startBackend(t, "node-a")
	g := startGateway(t, gateway.Config{}, b)

	for _, body := range []string{"", "{}", `{"message": "maintenance"}`} {
		resp, got := do(t, "POST", g.url+"/v1/devices/d1:disconnect", jsonType, body)
		if resp.StatusCode != 200 || string(compact(t, got)) != `{"leaseId":"42","node":"node-a"}` {
			t.Errorf("body %q: %d %s", body, resp.StatusCode, got)
		}
	}
}

func compact(t *testing.T, b []byte) []byte {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%q: %v", b, err)
	}
	out, _ := json.Marshal(v)
	return out
}

func TestServerErrorsAreMappedToHTTPStatusesWithTheGRPCCode(t *testing.T) {
	b := startBackend(t, "node-a")
	g := startGateway(t, gateway.Config{}, b)

	for _, tc := range []struct {
		device string
		status int
		code   int
	}{
		{"missing", 404, 5},
		{"err-unavailable", 503, 14},
		{"err-deadline", 504, 4},
		{"err-aborted", 409, 10},
		{"err-exhausted", 429, 8},
		{"err-denied", 403, 7},
		{"err-unauth", 401, 16},
		{"err-invalid", 400, 3},
		{"err-internal", 500, 13},
	} {
		t.Run(tc.device, func(t *testing.T) {
			resp, body := do(t, "GET", g.url+"/v1/devices/"+tc.device, "", "")
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d (%s)", resp.StatusCode, tc.status, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != jsonType {
				t.Errorf("Content-Type = %q", ct)
			}
			e := decodeError(t, body)
			if *e.Code != tc.code || !strings.Contains(*e.Message, tc.device) {
				t.Errorf("error %s, want code %d and a message naming the device", body, tc.code)
			}
		})
	}
}

func TestTheGatewayRejectsBadRequestsWithJSONErrors(t *testing.T) {
	b := startBackend(t, "node-a")
	g := startGateway(t, gateway.Config{MaxBodyBytes: 1024}, b)
	cmd := g.url + "/v1/devices/d1:command"

	for _, tc := range []struct {
		name        string
		method, url string
		contentType string
		body        string
		status      int
		code        int
		message     string
	}{
		{"malformed JSON", "POST", cmd, jsonType, `{"name": "x",`, 400, 3, "malformed JSON"},
		{"trailing garbage after the JSON value", "POST", cmd, jsonType, `{"name": "x"} {}`, 400, 3, "malformed JSON"},
		{"an unknown field", "POST", cmd, jsonType, `{"name": "x", "shell": "rm -rf /"}`, 400, 3, `unknown field "shell"`},
		{"a field of the wrong type", "POST", cmd, jsonType, `{"name": 7}`, 400, 3, "name"},
		{"a JSON array body", "POST", cmd, jsonType, `[]`, 400, 3, ""},
		{"a bad duration", "POST", cmd, jsonType, `{"timeout": "soon"}`, 400, 3, "Duration"},
		{"text/plain", "POST", cmd, "text/plain", `{"name": "x"}`, 415, 3, "Content-Type"},
		{"a form", "POST", cmd, "application/x-www-form-urlencoded", `name=x`, 415, 3, "Content-Type"},
		{"no Content-Type", "POST", cmd, "", `{"name": "x"}`, 415, 3, "Content-Type"},
		{"a non-UTF-8 charset", "POST", cmd, "application/json; charset=latin1", `{"name": "x"}`, 415, 3, "Content-Type"},
		{"a body over MaxBodyBytes", "POST", cmd, jsonType, `{"name": "` + strings.Repeat("x", 1100) + `"}`, 413, 8, "1024 bytes"},
		{"an unknown path", "GET", g.url + "/v1/gadgets", "", "", 404, 5, "/v1/gadgets"},
		{"an unknown top-level path", "GET", g.url + "/nothing-here", "", "", 404, 5, ""},
		{"POST on an unknown custom method (GetDevice of d1:explode)", "POST", g.url + "/v1/devices/d1:explode", jsonType, "{}", 405, 12, ""},
		{"GET on a POST route", "GET", cmd, "", "", 405, 12, "GET"},
		{"GET on a POST route for a MAC-like device id", "GET", g.url + "/v1/devices/aa:bb:cc:dd:ee:ff:disconnect", "", "", 405, 12, "GET"},
		{"POST on a GET route", "POST", g.url + "/v1/inventory", jsonType, "{}", 405, 12, "POST"},
		{"PUT on a device", "PUT", g.url + "/v1/devices/d1", jsonType, "{}", 405, 12, "PUT"},
		{"POST on /healthz", "POST", g.url + "/healthz", jsonType, "{}", 405, 12, ""},
		{"a bad enum in the query", "GET", g.url + "/v1/devices?presence=SOMETIMES", "", "", 400, 3, "SOMETIMES"},
		{"a bad integer in the query", "GET", g.url + "/v1/devices?pageSize=many", "", "", 400, 3, ""},
		{"a non-UTF-8 query value", "GET", g.url + "/v1/devices?labelSelector=%ff", "", "", 400, 3, "UTF-8"},
		{"a non-UTF-8 device id", "GET", g.url + "/v1/devices/%ff%fe", "", "", 400, 3, "UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, tc.method, tc.url, tc.contentType, tc.body)
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d (%s)", resp.StatusCode, tc.status, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != jsonType {
				t.Errorf("Content-Type = %q", ct)
			}
			e := decodeError(t, body)
			if *e.Code != tc.code || !strings.Contains(*e.Message, tc.message) {
				t.Errorf("error %s, want code %d and a message containing %q", body, tc.code, tc.message)
			}
			if tc.status == 405 {
				want := "GET"
				if strings.HasSuffix(tc.url, ":command") || strings.HasSuffix(tc.url, ":disconnect") {
					want = "POST"
				} else if id, ok := strings.CutPrefix(tc.url, g.url+"/v1/devices/"); ok && !strings.Contains(id, "/") {
					want = "DELETE, GET" // GetDevice and DeleteDevice
				}
				if got := resp.Header.Get("Allow"); got != want {
					t.Errorf("Allow = %q, want %q", got, want)
				}
			}
		})
	}
	if n := b.fleet.calls.Load(); n != 0 {
		t.Errorf("%d bad requests reached the server", n)
	}
}

func TestMethodOverrideHeadersAreIgnored(t *testing.T) {
	b := startBackend(t, "node-a")
	g := startGateway(t, gateway.Config{}, b)

	for _, h := range []string{"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"} {
		resp, body := do(t, "GET", g.url+"/v1/devices/d1:disconnect", "", "", h, "POST")
		if resp.StatusCode != 405 {
			t.Errorf("GET with %s: POST: %d %s, want 405", h, resp.StatusCode, body)
		}
		resp, body = do(t, "POST", g.url+"/v1/devices/d1", "application/x-www-form-urlencoded", "", h, "GET")
		if resp.StatusCode != 405 {
			t.Errorf("POST with %s: GET: %d %s, want 405", h, resp.StatusCode, body)
		}
	}
	b.fleet.mu.Lock()
	defer b.fleet.mu.Unlock()
	if b.fleet.disconnects != 0 || b.fleet.calls.Load() != 0 {
		t.Errorf("an overridden request reached the server (%d calls)", b.fleet.calls.Load())
	}
}

func TestOnlyAuthorizationAndTheRequestIdAreForwarded(t *testing.T) {
	b := startBackend(t, "node-a")
	g := startGateway(t, gateway.Config{}, b)

	resp, body := do(t, "GET", g.url+"/v1/devices/d1", "", "",
		"Authorization", "Bearer t0ken",
		"X-Request-Id", "req-123",
		"Grpc-Metadata-Role", "admin",
		"Grpc-Metadata-Authorization", "Bearer forged",
		"Grpc-Metadata-X-Forwarded-For", "6.6.6.6",
		"X-Forwarded-For", "6.6.6.6",
		"X-Forwarded-Host", "evil.example",
		"Grpc-Timeout", "1n",
		"Cookie", "session=abc",
		"X-Tenant", "other",
	)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if got := resp.Header.Get("X-Request-Id"); got != "req-123" {
		t.Errorf("response X-Request-Id = %q, want the client's", got)
	}
	md := b.fleet.metadata()
	if got := md.Get("authorization"); !slices.Equal(got, []string{"Bearer t0ken"}) {
		t.Errorf("authorization = %q", got)
	}
	if got := md.Get("x-request-id"); !slices.Equal(got, []string{"req-123"}) {
		t.Errorf("x-request-id = %q", got)
	}
	for _, xff := range md.Get("x-forwarded-for") {
		if strings.Contains(xff, "6.6.6.6") {
			t.Errorf("client X-Forwarded-For reached the server: %q", xff)
		}
	}
	for _, host := range md.Get("x-forwarded-host") {
		if host == "evil.example" {
			t.Error("client X-Forwarded-Host reached the server")
		}
	}
	for key := range md {
		if key == "role" || key == "x-tenant" || strings.HasPrefix(key, "grpc-metadata") || strings.HasPrefix(key, "grpcgateway-") {
			t.Errorf("header forwarded as metadata %q: %q", key, md[key])
		}
	}
}

func TestARequestIdIsGeneratedWhenAbsentOrUnusable(t *testing.T) {
	b := startBackend(t, "node-a")
	g := startGateway(t, gateway.Config{}, b)

	for _, clientID := range []string{"", "has spaces", strings.Repeat("x", 200), "line\u2028break"} {
		resp, _ := do(t, "GET", g.url+"/v1/devices/d1", "", "", "X-Request-Id", clientID)
		id := resp.Header.Get("X-Request-Id")
		if id == "" || id == clientID {
			t.Errorf("client id %q: response id %q", clientID, id)
		}
		if got := b.fleet.metadata().Get("x-request-id"); !slices.Equal(got, []string{id}) {
			t.Errorf("server got x-request-id %q, response says %q", got, id)
		}
	}
}

func TestEachRequestIsLoggedOnce(t *testing.T) {
	b := startBackend(t, "node-a")
	g := startGateway(t, gateway.Config{}, b)

	resp, _ := do(t, "GET", g.url+"/v1/devices/missing", "", "")
	id := resp.Header.Get("X-Request-Id")
	var found []map[string]any
	for _, line := range g.logs.lines(t) {
		if line["request_id"] == id {
			found = append(found, line)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d log lines for request %s, want 1", len(found), id)
	}
	l := found[0]
	if l["method"] != "GET" || l["path"] != "/v1/devices/missing" || l["status"] != float64(404) || l["duration"] == nil {
		t.Errorf("log line %v", l)
	}
}

func TestWatchStreamsOneJSONLinePerEventAsItHappens(t *testing.T) {
	b := startBackend(t, "node-a")
	g := startGateway(t, gateway.Config{}, b)

	for _, tc := range []struct {
		afterEventID string
		wantLast     string // the last line's top-level key
	}{
		{"", ""},
		{"fail", "error"},
	} {
		t.Run("afterEventId="+tc.afterEventID, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), "GET", g.url+"/v1/devices:watch?includeSnapshot=true&afterEventId="+tc.afterEventID, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
				t.Errorf("Content-Type = %q", ct)
			}
			if got := resp.Header.Get("X-Accel-Buffering"); got != "no" {
				t.Errorf("X-Accel-Buffering = %q", got)
			}
			lines := bufio.NewReader(resp.Body)

			// The server holds the second event until the first line has
			// been read: the line cannot have been buffered behind it.
			first := readLine(t, lines)
			var ev struct {
				Result struct {
					Event struct {
						EventID  string `json:"eventId"`
						Type     string `json:"type"`
						DeviceID string `json:"deviceId"`
						LeaseID  string `json:"leaseId"`
					} `json:"event"`
				} `json:"result"`
			}
			if err := json.Unmarshal(first, &ev); err != nil {
				t.Fatalf("first line %q: %v", first, err)
			}
			if e := ev.Result.Event; e.EventID != "1-0" || e.Type != "EVENT_TYPE_ONLINE" || e.DeviceID != "d1" || e.LeaseID != "7" {
				t.Errorf("first line %s", first)
			}
			b.fleet.mu.Lock()
			wreq := b.fleet.lastWatch
			b.fleet.mu.Unlock()
			if !wreq.GetIncludeSnapshot() || wreq.GetAfterEventId() != tc.afterEventID {
				t.Errorf("server got %v", wreq)
			}

			b.fleet.nextEvent <- struct{}{}
			second := readLine(t, lines)
			if !strings.Contains(string(second), `"EVENT_TYPE_OFFLINE"`) {
				t.Errorf("second line %s", second)
			}
			if tc.wantLast == "error" {
				if e := errorLine(t, readLine(t, lines)); *e.Code != 10 || *e.Message != "watch fell behind" {
					t.Errorf("error line %d %q", *e.Code, *e.Message)
				}
			}
			if rest, err := lines.ReadBytes('\n'); len(rest) != 0 || err == nil {
				t.Errorf("after the last line: %q, %v; want EOF", rest, err)
			}
		})
	}
}

// readLine reads one newline-terminated line and checks it is one JSON value.
func readLine(t *testing.T, r *bufio.Reader) []byte {
	t.Helper()
	line, err := r.ReadBytes('\n')
	if err != nil {
		t.Fatalf("reading a line: %v (got %q)", err, line)
	}
	line = line[:len(line)-1]
	if !json.Valid(line) || strings.Contains(string(line), "\n") {
		t.Fatalf("line %q is not one JSON value", line)
	}
	return line
}

// errorLine checks that a stream line is exactly {"error": <error body>} and
// returns the error.
func errorLine(t *testing.T, line []byte) errorBody {
	t.Helper()
	var chunk map[string]json.RawMessage
	if err := json.Unmarshal(line, &chunk); err != nil || len(chunk) != 1 || chunk["error"] == nil {
		t.Fatalf("line %s, want {\"error\": ...}", line)
	}
	return decodeError(t, chunk["error"])
}

func TestShutdownEndsOpenWatchStreamsWithUnavailable(t *testing.T) {
	b := startBackend(t, "node-a")
	g := startGateway(t, gateway.Config{ShutdownTimeout: 5 * time.Second}, b)

	req, _ := http.NewRequestWithContext(t.Context(), "GET", g.url+"/v1/devices:watch?afterEventId=hold", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewReader(resp.Body)
	readLine(t, lines)

	g.stop()
	if e := errorLine(t, readLine(t, lines)); *e.Code != 14 || !strings.Contains(*e.Message, "afterEventId") {
		t.Errorf("last line %d %q, want UNAVAILABLE telling to resume", *e.Code, *e.Message)
	}
	if err := <-g.served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	g.served <- nil // for the cleanup
}

// gatewayYAMLRule matches an HTTP rule in api/tether/v1/gateway.yaml.
var gatewayYAMLRule = regexp.MustCompile(`(?m)^\s*(get|post|put|patch|delete):\s*(\S+)\s*$`)

func TestTheOpenAPIDocumentDescribesEveryRouteAndTheGatewayServesThem(t *testing.T) {
	b := startBackend(t, "node-a")
	g := startGateway(t, gateway.Config{}, b)

	resp, body := do(t, "GET", g.url+"/openapi.json", "", "")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != jsonType {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var doc struct {
		Swagger string                                `json:"swagger"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Swagger != "2.0" {
		t.Errorf("swagger = %q", doc.Swagger)
	}

	// Every HTTP rule the gateway is generated from is in the document.
	rules, err := os.ReadFile("../api/tether/v1/gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	matches := gatewayYAMLRule.FindAllStringSubmatch(string(rules), -1)
	if len(matches) == 0 {
		t.Fatal("no HTTP rules found in gateway.yaml")
	}
	for _, m := range matches {
		path := strings.NewReplacer("{device_id}", "{deviceId}", "{job_id}", "{jobId}").Replace(m[2])
		if _, ok := doc.Paths[path][m[1]]; !ok {
			t.Errorf("gateway.yaml rule %s %s is not in the OpenAPI document", m[1], m[2])
		}
	}

	// Every operation in the document is served: not 404 or 405.
	for path, ops := range doc.Paths {
		for method := range ops {
			url := g.url + strings.NewReplacer("{deviceId}", "d1", "{jobId}", "j1").Replace(path)
			method = strings.ToUpper(method)
			var resp *http.Response
			if method == "POST" {
				resp, body = do(t, method, url, jsonType, "{}")
			} else if strings.HasSuffix(path, ":watch") {
				req, _ := http.NewRequestWithContext(t.Context(), method, url+"?afterEventId=hold", nil)
				resp, err = http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			} else {
				resp, body = do(t, method, url, "", "")
			}
			if resp.StatusCode == 404 || resp.StatusCode == 405 {
				t.Errorf("%s %s: %d %s", method, path, resp.StatusCode, body)
			}
		}
	}
}

func TestHealthzIsOKWhileAServerIsServingAnd503Otherwise(t *testing.T) {
	b := startBackend(t, "node-a")
	g := startGateway(t, gateway.Config{}, b)

	for _, path := range []string{"/healthz", "/readyz"} {
		resp, body := do(t, "GET", g.url+path, "", "")
		if resp.StatusCode != 200 || string(body) != `{"status":"ok"}` || resp.Header.Get("Content-Type") != jsonType {
			t.Errorf("%s: %d %s", path, resp.StatusCode, body)
		}
	}

	b.health.SetServingStatus("", grpc_health_v1.HealthCheckResponse_NOT_SERVING)
	eventually(t, "/healthz to report a NOT_SERVING server", func() bool {
		resp, _ := do(t, "GET", g.url+"/healthz", "", "")
		return resp.StatusCode == 503
	})
	b.health.SetServingStatus("", grpc_health_v1.HealthCheckResponse_SERVING)
	eventually(t, "/healthz to recover", func() bool {
		resp, _ := do(t, "GET", g.url+"/healthz", "", "")
		return resp.StatusCode == 200
	})

	b.srv.Stop()
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, body := do(t, "GET", g.url+path, "", "")
		if resp.StatusCode != 503 {
			t.Errorf("%s after the server stopped: %d %s", path, resp.StatusCode, body)
			continue
		}
		if e := decodeError(t, body); *e.Code != 14 {
			t.Errorf("%s: %s", path, body)
		}
	}
}

func TestWithTwoServersRequestsSucceedAfterOneStops(t *testing.T) {
	a, b := startBackend(t, "node-a"), startBackend(t, "node-b")
	g := startGateway(t, gateway.Config{}, a, b)

	// Both servers take calls (round robin) before one goes away.
	eventually(t, "both servers to receive calls", func() bool {
		resp, _ := do(t, "GET", g.url+"/v1/devices/d1", "", "")
		return resp.StatusCode == 200 && a.fleet.calls.Load() > 0 && b.fleet.calls.Load() > 0
	})

	a.srv.Stop()
	before := b.fleet.calls.Load()
	for i := range 20 {
		resp, body := do(t, "GET", g.url+"/v1/devices/d1", "", "")
		if resp.StatusCode != 200 {
			t.Fatalf("request %d after one server stopped: %d %s", i, resp.StatusCode, body)
		}
	}
	if got := b.fleet.calls.Load() - before; got < 20 {
		t.Errorf("the remaining server got %d of 20 calls", got)
	}
	if resp, body := do(t, "GET", g.url+"/readyz", "", ""); resp.StatusCode != 200 {
		t.Errorf("/readyz with one server left: %d %s", resp.StatusCode, body)
	}
}

func TestCORS(t *testing.T) {
	b := startBackend(t, "node-a")
	const console = "https://console.example"
	withCORS := startGateway(t, gateway.Config{CORSAllowedOrigins: []string{console}}, b)
	anyOrigin := startGateway(t, gateway.Config{CORSAllowedOrigins: []string{"*"}}, b)
	noCORS := startGateway(t, gateway.Config{}, b)

	preflight := func(g *gw, origin string) *http.Response {
		resp, _ := do(t, "OPTIONS", g.url+"/v1/devices/d1:command", "", "",
			"Origin", origin,
			"Access-Control-Request-Method", "POST",
			"Access-Control-Request-Headers", "authorization, content-type")
		return resp
	}

	t.Run("a preflight from an allowed origin is answered", func(t *testing.T) {
		resp := preflight(withCORS, console)
		if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != console ||
			!strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST") ||
			resp.Header.Get("Access-Control-Allow-Headers") != "Authorization, Content-Type, X-Request-Id" {
			t.Errorf("%d %v", resp.StatusCode, resp.Header)
		}
	})
	t.Run("a preflight from another origin gets no CORS headers", func(t *testing.T) {
		resp := preflight(withCORS, "https://evil.example")
		if resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.Header.Get("Access-Control-Allow-Methods") != "" {
			t.Errorf("%d %v", resp.StatusCode, resp.Header)
		}
	})
	t.Run("a request from an allowed origin gets the origin and the exposed request id", func(t *testing.T) {
		resp, _ := do(t, "GET", withCORS.url+"/v1/devices/d1", "", "", "Origin", console)
		if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != console ||
			resp.Header.Get("Access-Control-Expose-Headers") != "X-Request-Id" || !slices.Contains(resp.Header.Values("Vary"), "Origin") {
			t.Errorf("%d %v", resp.StatusCode, resp.Header)
		}
	})
	t.Run("errors carry CORS headers too", func(t *testing.T) {
		resp, _ := do(t, "GET", withCORS.url+"/v1/devices/missing", "", "", "Origin", console)
		if resp.StatusCode != 404 || resp.Header.Get("Access-Control-Allow-Origin") != console {
			t.Errorf("%d %v", resp.StatusCode, resp.Header)
		}
	})
	t.Run(`"*" allows any origin`, func(t *testing.T) {
		resp := preflight(anyOrigin, "https://anything.example")
		if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("%d %v", resp.StatusCode, resp.Header)
		}
	})
	t.Run("without configured origins there are no CORS headers and OPTIONS is not allowed", func(t *testing.T) {
		resp := preflight(noCORS, console)
		if resp.StatusCode != 405 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("%d %v", resp.StatusCode, resp.Header)
		}
		resp, _ = do(t, "GET", noCORS.url+"/v1/devices/d1", "", "", "Origin", console)
		if resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("%v", resp.Header)
		}
	})
}

func TestNewHandlerServesTheAPIOverACallerOwnedConnectionUntilCtxEnds(t *testing.T) {
	b := startBackend(t, "node-a")
	conn, err := grpc.NewClient(b.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(t.Context())
	h, err := gateway.NewHandler(ctx, conn, gateway.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	resp, body := do(t, "GET", srv.URL+"/v1/devices/d1", "", "")
	if resp.StatusCode != 200 {
		t.Errorf("%d %s", resp.StatusCode, body)
	}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/v1/devices:watch?afterEventId=hold", nil)
	watch, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Body.Close()
	lines := bufio.NewReader(watch.Body)
	readLine(t, lines)

	cancel()
	if e := errorLine(t, readLine(t, lines)); *e.Code != 14 {
		t.Errorf("watch after ctx ended: code %d, want UNAVAILABLE", *e.Code)
	}
	if resp, _ := do(t, "GET", srv.URL+"/readyz", "", ""); resp.StatusCode != 503 {
		t.Errorf("/readyz after ctx ended: %d", resp.StatusCode)
	}
	// The caller's connection is still open and the API still answers.
	if resp, body := do(t, "GET", srv.URL+"/v1/devices/d1", "", ""); resp.StatusCode != 200 {
		t.Errorf("after ctx ended: %d %s", resp.StatusCode, body)
	}

	if _, err := gateway.NewHandler(t.Context(), conn, gateway.Config{Servers: []string{"x:1"}}); err == nil {
		t.Error("NewHandler accepted Servers")
	}
	if _, err := gateway.NewHandler(t.Context(), nil, gateway.Config{}); err == nil {
		t.Error("NewHandler accepted a nil connection")
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  gateway.Config
		ok   bool
	}{
		{"the zero value", gateway.Config{}, true},
		{"one server of any target form", gateway.Config{Servers: []string{"dns:///tether.internal:7070"}}, true},
		{"several host:port servers", gateway.Config{Servers: []string{"10.0.0.1:7070", "10.0.0.2:7070"}}, true},
		{"several servers, one without a port", gateway.Config{Servers: []string{"10.0.0.1:7070", "10.0.0.2"}}, false},
		{"an empty server", gateway.Config{Servers: []string{""}}, false},
		{"a comma-separated list in one entry", gateway.Config{Servers: []string{"a:1,b:2"}}, false},
		{"a server listed twice", gateway.Config{Servers: []string{"a:1", "a:1"}}, false},
		{"origins", gateway.Config{CORSAllowedOrigins: []string{"https://a.example", "http://localhost:3000"}}, true},
		{"the wildcard origin", gateway.Config{CORSAllowedOrigins: []string{"*"}}, true},
		{"the wildcard with others", gateway.Config{CORSAllowedOrigins: []string{"*", "https://a.example"}}, false},
		{"an origin with a path", gateway.Config{CORSAllowedOrigins: []string{"https://a.example/app"}}, false},
		{"an origin without a scheme", gateway.Config{CORSAllowedOrigins: []string{"a.example"}}, false},
		{"a negative body limit", gateway.Config{MaxBodyBytes: -1}, false},
		{"a huge body limit", gateway.Config{MaxBodyBytes: 1 << 40}, false},
		{"a negative health timeout", gateway.Config{HealthTimeout: -time.Second}, false},
		{"a negative shutdown timeout", gateway.Config{ShutdownTimeout: -time.Second}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	if _, err := gateway.New(t.Context(), gateway.Config{}); err == nil {
		t.Error("New accepted a Config without Servers")
	}
}

func TestTheFleetPageIsServedAtTheRoot(t *testing.T) {
	g := startGateway(t, gateway.Config{}, startBackend(t, "node-a"))
	for path, ctype := range map[string]string{"/": "text/html", "/ui/app.js": "javascript", "/ui/style.css": "text/css"} {
		resp, err := http.Get(g.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), ctype) {
			t.Errorf("GET %s: %s %q", path, resp.Status, resp.Header.Get("Content-Type"))
		}
	}
}
