package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/blackhole"
)

// post sends a JSON POST and returns the status and decoded body.
func post(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("POST %s: %s: not JSON: %q", url, resp.Status, b)
	}
	return resp.StatusCode, m
}

// TestCommandsAcrossThreeReplicas: three replicas share Redis, agents are
// spread over them, and a gateway attached to replica 1 reaches a device held
// by replica 3; every documented error status is hit.
func TestCommandsAcrossThreeReplicas(t *testing.T) {
	c := startCluster(t, 3, "--ping-interval", "2s", "--ping-timeout", "1s")
	gw := freeAddr(t)
	start(t, "tether-gateway", "--listen", gw, "--server", c.grpc[0])
	waitListening(t, gw)
	base := "http://" + gw
	cfg := writeAgentConfig(t, "commands:\n  nap:\n    argv: [\"/bin/sleep\", \"30\"]\n    timeout: 60s\n")
	for i := 0; i < 3; i++ {
		start(t, "tether-agent", "--server", c.grpc[i], "--device-id", fmt.Sprintf("x-%d", i+1), "--config", cfg)
	}
	for i := 0; i < 3; i++ {
		d := waitOnline(t, base, fmt.Sprintf("x-%d", i+1), 20*time.Second)
		if d.Session.Node != fmt.Sprintf("r%d", i+1) {
			t.Fatalf("x-%d on %s", i+1, d.Session.Node)
		}
	}

	code, body := post(t, base+"/v1/devices/x-3:command", `{"name": "echo", "args": ["across", "replicas"]}`)
	if code != 200 || body["output"] != "across replicas\n" || body["node"] != "r3" {
		t.Fatalf("echo via r1 to a device on r3: %d %v", code, body)
	}

	code, body = post(t, base+"/v1/devices/nobody:command", `{"name": "echo"}`)
	if code != 404 || body["code"] != float64(5) {
		t.Errorf("unknown device: %d %v", code, body)
	}
	code, body = post(t, base+"/v1/devices/x-2:command", `{"name": "nap", "timeout": "1s"}`)
	if code != 504 {
		t.Errorf("timeout on a remote device: %d %v", code, body)
	}
	code, body = post(t, base+"/v1/devices/x-2:command", `{"name": "nosuch"}`)
	if code != 200 || !strings.Contains(fmt.Sprint(body["error"]), "unknown command") {
		t.Errorf("unknown command: %d %v", code, body)
	}

	// Kick x-1 (held by r1) and x-3 (held by r3, routed): both go offline
	// with reason KICKED; then a command answers 503 "offline since".
	for _, id := range []string{"x-1", "x-3"} {
		code, body = post(t, base+"/v1/devices/"+id+":disconnect", `{}`)
		if code != 200 {
			t.Fatalf("disconnect %s: %d %v", id, code, body)
		}
	}
	// (The agents reconnect after their backoff; until then they are
	// offline.)
	d, err := getDevice(base, "x-3")
	if err == nil && !d.Online && d.LastDisconnect != nil && d.LastDisconnect.Reason == "DISCONNECT_REASON_KICKED" {
		code, body = post(t, base+"/v1/devices/x-3:command", `{"name": "echo"}`)
		if code != 503 || !strings.Contains(fmt.Sprint(body["message"]), "offline since") {
			t.Errorf("offline device: %d %v", code, body)
		}
	} else {
		t.Errorf("x-3 after the kick: %+v %v", d, err)
	}
}

// TestCommandInFlightWhenTheConnectionIsCutIsAborted: the device's connection
// goes silent while a command runs; when the server declares the session
// dead the caller gets 409 ABORTED, and the command is not re-sent to the
// device's next session.
func TestCommandInFlightWhenTheConnectionIsCutIsAborted(t *testing.T) {
	c := startCluster(t, 2, "--ping-interval", "2s", "--ping-timeout", "1s")
	proxy, err := blackhole.NewProxy(c.grpc[1])
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	cfg := writeAgentConfig(t, "commands:\n  nap:\n    argv: [\"/bin/sleep\", \"30\"]\n    timeout: 60s\n")
	agent := start(t, "tether-agent", "--server", proxy.Addr(), "--device-id", "cut-1", "--config", cfg)
	waitOnline(t, c.base(0), "cut-1", 20*time.Second)

	type result struct {
		code int
		body map[string]any
	}
	done := make(chan result, 1)
	go func() {
		code, body := post(t, c.base(0)+"/v1/devices/cut-1:command", `{"name": "nap", "timeout": "60s"}`)
		done <- result{code, body}
	}()
	time.Sleep(500 * time.Millisecond) // the command is on its way to the device
	agent.signal(syscall.SIGSTOP)
	proxy.Cut()
	select {
	case r := <-done:
		if r.code != 409 || !strings.Contains(fmt.Sprint(r.body["message"]), "ended while the command was in flight") {
			t.Fatalf("in-flight command: %d %v", r.code, r.body)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the in-flight command did not end")
	}
	agent.signal(syscall.SIGCONT)
}
