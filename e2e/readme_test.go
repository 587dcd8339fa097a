package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestREADMEExamplesWorkAsWritten starts the system the way `make run` does
// (same ports, same demo agent) and runs every README example.
func TestREADMEExamplesWorkAsWritten(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:7070", "127.0.0.1:8080", "127.0.0.1:7075"} {
		if c, err := netDial(addr); err == nil {
			c.Close()
			t.Fatalf("%s is already in use; the README examples need it free", addr)
		}
	}
	grpcurl := grpcurlPath(t)
	start(t, "tether-server", "--listen", "127.0.0.1:7070", "--http", "127.0.0.1:8080", "--metrics", "127.0.0.1:7075")
	waitListening(t, "127.0.0.1:7070")
	waitListening(t, "127.0.0.1:8080")
	demo, err := os.ReadFile("../scripts/demo-agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	start(t, "tether-agent", "--server", "127.0.0.1:7070", "--device-id", "demo-1", "--config", writeFile(t, "demo-agent.yaml", demo))
	waitOnline(t, "http://127.0.0.1:8080", "demo-1", 20*time.Second)

	path := filepath.Dir(grpcurl) + ":" + os.Getenv("PATH")
	cmds := docCommands(t, "../README.md", false)
	if len(cmds) < 5 {
		t.Fatalf("found only %d example commands in README.md", len(cmds))
	}
	for _, c := range cmds {
		cmd := exec.Command("bash", "-c", "set -o pipefail; "+c+" --fail-with-body 2>&1")
		if strings.HasPrefix(c, "grpcurl") {
			cmd = exec.Command("bash", "-c", c)
		}
		cmd.Env = append(os.Environ(), "PATH="+path)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s\n  failed: %v\n%s", c, err, out)
			continue
		}
		s := string(out)
		switch {
		case strings.Contains(c, ":command") || strings.Contains(c, "SendCommand"):
			if !strings.Contains(s, "hello") && !strings.Contains(s, "hi") {
				t.Errorf("%s\n  output lacks the echoed text:\n%s", c, s)
			}
		case strings.Contains(c, " list"):
			for _, svc := range []string{"tether.v1.AgentService", "tether.v1.DeviceService", "grpc.health.v1.Health", "grpc.reflection"} {
				if !strings.Contains(s, svc) {
					t.Errorf("%s\n  does not list %s:\n%s", c, svc, s)
				}
			}
		case strings.Contains(c, "Health/Check"):
			if !strings.Contains(s, "SERVING") {
				t.Errorf("%s\n  not SERVING:\n%s", c, s)
			}
		case strings.Contains(c, "demo-1") || strings.Contains(c, "/v1/devices"):
			if !strings.Contains(s, "demo-1") {
				t.Errorf("%s\n  output lacks demo-1:\n%s", c, s)
			}
		}
		t.Logf("ok: %s", c)
	}
}
