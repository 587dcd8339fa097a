package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestBothGatewaysAnswerByteIdenticalJSON: the embedded gateway
// (tether-server --http) and tether-gateway in front of the same replica
// answer the same calls with the same status, Content-Type and bytes; and
// the JSON has the shape a frontend relies on (defaults present, lists as
// arrays, short errors).
func TestBothGatewaysAnswerByteIdenticalJSON(t *testing.T) {
	g, embedded, standalone := freeAddr(t), freeAddr(t), freeAddr(t)
	start(t, "tether-server", "--listen", g, "--http", embedded, "--node", "gw-r1")
	waitListening(t, g)
	start(t, "tether-gateway", "--listen", standalone, "--server", g)
	waitListening(t, embedded)
	waitListening(t, standalone)
	start(t, "tether-agent", "--server", g, "--device-id", "gw-on", "--config", writeAgentConfig(t, "labels:\n  env: test\n"[len("labels:\n"):]))
	off := start(t, "tether-agent", "--server", g, "--device-id", "gw-off", "--config", writeAgentConfig(t, ""))
	waitOnline(t, "http://"+embedded, "gw-on", 20*time.Second)
	waitOnline(t, "http://"+embedded, "gw-off", 20*time.Second)
	off.stop(5 * time.Second)
	eventually(t, 10*time.Second, func() error {
		d, err := getDevice("http://"+embedded, "gw-off")
		if err != nil || d.Online {
			return fmt.Errorf("gw-off still online (%v)", err)
		}
		return nil
	})

	type call struct {
		method, path, body string
		status             int
		contains           []string
	}
	calls := []call{
		{"GET", "/v1/devices", "", 200, []string{`"online":false`, `"online":true`}},
		{"GET", "/v1/devices?presence=online", "", 200, []string{`"deviceId":"gw-on"`}},
		{"GET", "/v1/devices?presence=offline", "", 200, []string{`"deviceId":"gw-off"`}},
		{"GET", "/v1/devices?label_selector=env!=test", "", 200, []string{`"deviceId":"gw-off"`}},
		{"GET", "/v1/devices?label_selector=env%20in%20(test)", "", 200, []string{`"deviceId":"gw-on"`}},
		{"GET", "/v1/devices?label_selector=env%20notin%20(test),role", "", 200, []string{`"deviceId":"gw-off"`}},
		{"GET", "/v1/devices?label_selector=nope", "", 200, []string{`{"devices":[],"nextPageToken":""}`}},
		{"GET", "/v1/devices?label_selector=version%3E2", "", 400, []string{`"code":3`, "supported:"}},
		{"GET", "/v1/devices?presence=sometimes", "", 400, []string{`presence: \"sometimes\" is not one of online, offline`}},
		{"GET", "/v1/devices/gw-off", "", 200, []string{`"online":false`, `"lastDisconnect"`}},
		{"GET", "/v1/devices/nope", "", 404, []string{`{"code":5,"message":"device nope not found","details":[]}`}},
		{"POST", "/v1/devices/gw-off:command", `{"name":"echo"}`, 503, []string{`"code":14`, "device gw-off is offline since"}},
		{"DELETE", "/v1/devices/gw-on", "", 400, []string{`"code":9`, "device gw-on is online"}},
		{"PUT", "/v1/devices/gw-on", "", 405, []string{`"code":12`}},
		{"GET", "/v1/gadgets", "", 404, []string{`"code":5`}},
	}
	do := func(base string, c call) (int, string, []byte, error) {
		req, _ := http.NewRequest(c.method, base+c.path, strings.NewReader(c.body))
		if c.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, "", nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), b, err
	}
	for _, c := range calls {
		// Retried: an online device's lastSeen/lastRtt may move between
		// the two requests.
		eventually(t, 10*time.Second, func() error {
			s1, ct1, b1, err := do("http://"+embedded, c)
			if err != nil {
				return err
			}
			s2, ct2, b2, err := do("http://"+standalone, c)
			if err != nil {
				return err
			}
			if s1 != c.status || s2 != s1 || ct1 != ct2 || !bytes.Equal(b1, b2) {
				return fmt.Errorf("%s %s:\n  embedded   %d %s %s\n  standalone %d %s %s", c.method, c.path, s1, ct1, b1, s2, ct2, b2)
			}
			for _, w := range c.contains {
				if !strings.Contains(string(b1), w) {
					return fmt.Errorf("%s %s: %s lacks %s", c.method, c.path, b1, w)
				}
			}
			if strings.Contains(string(b1), "null") || strings.Contains(string(b1), "registry:") {
				return fmt.Errorf("%s %s: null or an internal prefix in %s", c.method, c.path, b1)
			}
			return nil
		})
	}
}

// TestBothGatewaysStreamTheSameWatch: the embedded gateway serves watches
// from the replica's event feed in-process (each event encoded once for all
// its watchers) and tether-gateway relays the gRPC stream; a client cannot
// tell them apart: the same status, Content-Type and lines (timestamps
// aside) for a snapshot, live events, refusals by the server and the end of
// a stream, and the same 429 when the replica's watch cap is reached.
func TestBothGatewaysStreamTheSameWatch(t *testing.T) {
	g, embedded, standalone := freeAddr(t), freeAddr(t), freeAddr(t)
	start(t, "tether-server", "--listen", g, "--http", embedded, "--node", "gw-w1", "--max-watchers", "3")
	waitListening(t, g)
	start(t, "tether-gateway", "--listen", standalone, "--server", g)
	waitListening(t, embedded)
	waitListening(t, standalone)
	start(t, "tether-agent", "--server", g, "--device-id", "gw-w-a", "--config", writeAgentConfig(t, ""))
	waitOnline(t, "http://"+embedded, "gw-w-a", 20*time.Second)

	// Fields that differ between two reads of the same state.
	volatile := regexp.MustCompile(`"(time|lastSeen|lastRtt)":("[^"]*"|null)`)
	type stream struct {
		status int
		ctype  string
		lines  <-chan string
		cancel context.CancelFunc
	}
	open := func(base, query string) stream {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+base+"/v1/devices:watch"+query, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return stream{resp.StatusCode, resp.Header.Get("Content-Type"), lines(resp.Body), cancel}
	}
	// next returns the stream's next line with the volatile fields blanked
	// ("" once the stream ended).
	next := func(s stream) string {
		select {
		case l, ok := <-s.lines:
			if !ok {
				return ""
			}
			return volatile.ReplaceAllString(l, `"$1":"-"`)
		case <-time.After(20 * time.Second):
			t.Fatal("no watch line within 20 s")
		}
		return ""
	}
	same := func(what string, a, b string) {
		t.Helper()
		if a != b {
			t.Fatalf("%s differs:\n  embedded   %s\n  standalone %s", what, a, b)
		}
	}

	// A snapshot, then a live event.
	e := open(embedded, "?include_snapshot=true")
	s := open(standalone, "?include_snapshot=true")
	same("status", fmt.Sprint(e.status, e.ctype), fmt.Sprint(s.status, s.ctype))
	if e.status != 200 || e.ctype != "application/x-ndjson" {
		t.Fatalf("watch answered %d %s", e.status, e.ctype)
	}
	for {
		le, ls := next(e), next(s)
		same("snapshot line", le, ls)
		if strings.Contains(le, "SNAPSHOT_END") {
			break
		}
	}
	start(t, "tether-agent", "--server", g, "--device-id", "gw-w-b", "--config", writeAgentConfig(t, ""))
	le, ls := next(e), next(s)
	same("live event", le, ls)
	if !strings.Contains(le, `"type":"EVENT_TYPE_ONLINE"`) || !strings.Contains(le, `"deviceId":"gw-w-b"`) {
		t.Fatalf("live event: %s", le)
	}

	// The replica's cap (3): a third watch is the last one admitted.
	third := open(embedded, "")
	if third.status != 200 {
		t.Fatalf("third watch: %d", third.status)
	}
	read := func(base, query string) (int, string, string) {
		s := open(base, query)
		defer s.cancel()
		var all []string
		for l := next(s); l != ""; l = next(s) {
			all = append(all, l)
		}
		return s.status, s.ctype, strings.Join(all, "\n")
	}
	for _, q := range []string{"", "?after_event_id=not-an-id", "?include_snapshot=maybe"} {
		s1, c1, b1 := read(embedded, q)
		s2, c2, b2 := read(standalone, q)
		same("refusal "+q, fmt.Sprint(s1, " ", c1, " ", b1), fmt.Sprint(s2, " ", c2, " ", b2))
		if s1 < 400 || !strings.Contains(b1, `"code"`) {
			t.Fatalf("refusal %q: %d %s", q, s1, b1)
		}
		t.Logf("%q: %d %s %s", q, s1, c1, b1)
	}
}
