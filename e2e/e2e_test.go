package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/blackhole"
)

// TestAgentAppearsThroughTheStandaloneGateway: real tether-server, real
// tether-gateway, real tether-agent; the device shows up in GET /v1/devices.
func TestAgentAppearsThroughTheStandaloneGateway(t *testing.T) {
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	start(t, "tether-server", "--listen", grpcAddr, "--node", "n1")
	waitListening(t, grpcAddr)
	start(t, "tether-gateway", "--listen", httpAddr, "--server", grpcAddr)
	waitListening(t, httpAddr)
	start(t, "tether-agent", "--server", grpcAddr, "--device-id", "e2e-1", "--config", writeAgentConfig(t, ""))
	base := "http://" + httpAddr

	var list struct {
		Devices []device `json:"devices"`
	}
	eventually(t, 20*time.Second, func() error {
		if err := getJSON(base+"/v1/devices", &list); err != nil {
			return err
		}
		for _, d := range list.Devices {
			if d.DeviceID == "e2e-1" && d.Online {
				return nil
			}
		}
		return fmt.Errorf("e2e-1 not listed online: %+v", list.Devices)
	})
	d := waitOnline(t, base, "e2e-1", 5*time.Second)
	if d.Session == nil || d.Session.Node != "n1" || d.Session.LivenessMode != "LIVENESS_MODE_APP_PONG" || d.Info.AgentVersion == "" {
		t.Fatalf("device = %+v", d)
	}
	if d.Info.Labels["role"] != "e2e" {
		t.Fatalf("labels from the agent config missing: %+v", d.Info.Labels)
	}
}

// writeAgentConfig writes an agent config file with mode 0600.
func writeAgentConfig(t *testing.T, extra string) string {
	t.Helper()
	return writeFile(t, "agent.yaml", []byte("labels:\n  role: e2e\n"+extra))
}

// writeFile writes a file with mode 0600 in a temporary directory.
func writeFile(t *testing.T, name string, body []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, body, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPowerLossThroughABlackholeProxy: agents (app-pong and legacy) connect
// through a user-space proxy that then stops forwarding without closing
// either socket; each device reads offline with the right reason.
func TestPowerLossThroughABlackholeProxy(t *testing.T) {
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	// Short intervals keep the test quick; the bound scales with them.
	start(t, "tether-server", "--listen", grpcAddr, "--http", httpAddr, "--ping-interval", "2s", "--ping-timeout", "1s")
	waitListening(t, grpcAddr)
	waitListening(t, httpAddr)
	base := "http://" + httpAddr
	for _, tc := range []struct {
		id, reason string
		legacy     bool
	}{
		{"pl-pong", "DISCONNECT_REASON_PING_TIMEOUT", false},
		{"pl-legacy", "DISCONNECT_REASON_KEEPALIVE_TIMEOUT", true},
	} {
		t.Run(tc.id, func(t *testing.T) {
			proxy, err := blackhole.NewProxy(grpcAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer proxy.Close()
			args := []string{"--server", proxy.Addr(), "--device-id", tc.id, "--config", writeAgentConfig(t, "")}
			if tc.legacy {
				args = append(args, "--legacy-no-pong")
			}
			agent := start(t, "tether-agent", args...)
			waitOnline(t, base, tc.id, 20*time.Second)
			// Freeze the agent too, so it cannot reconnect around the cut:
			// a powered-off device sends nothing at all.
			agent.signal(syscall.SIGSTOP)
			defer agent.signal(syscall.SIGCONT)
			proxy.Cut()
			var d device
			eventually(t, 30*time.Second, func() error {
				var err error
				if d, err = getDevice(base, tc.id); err != nil {
					return err
				}
				if d.Online {
					return fmt.Errorf("still online")
				}
				return nil
			})
			if d.LastDisconnect == nil || d.LastDisconnect.Reason != tc.reason {
				t.Fatalf("last disconnect = %+v, want %s", d.LastDisconnect, tc.reason)
			}
		})
	}
}

// TestSIGTERMDrainsAgentsToASecondServer: two servers share nothing but a
// load-balancing proxy in front; SIGTERM on the first sends Close(draining),
// the agents reconnect (through the proxy) to the second, and the first
// exits 0.
func TestSIGTERMDrainsAgentsToASecondServer(t *testing.T) {
	a, b := freeAddr(t), freeAddr(t)
	httpB := freeAddr(t)
	srvA := start(t, "tether-server", "--listen", a, "--node", "a")
	start(t, "tether-server", "--listen", b, "--node", "b", "--http", httpB)
	waitListening(t, a)
	waitListening(t, b)
	lb, err := newFailoverProxy(a, b)
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	const n = 5
	for i := 0; i < n; i++ {
		start(t, "tether-agent", "--server", lb.Addr(), "--device-id", fmt.Sprintf("drain-%d", i), "--config", writeAgentConfig(t, ""))
	}
	eventually(t, 20*time.Second, func() error {
		if c := lb.active(a); c < n {
			return fmt.Errorf("%d of %d agents on server a", c, n)
		}
		// A connection is not yet a session: wait for every Hello to be
		// accepted, or a Hello still in flight at SIGTERM is refused
		// (UNAVAILABLE) instead of drained.
		out := srvA.out.String()
		for i := 0; i < n; i++ {
			if !regexp.MustCompile(`session started.*device=drain-` + fmt.Sprint(i) + ` `).MatchString(out) {
				return fmt.Errorf("no session of drain-%d on server a yet", i)
			}
		}
		return nil
	})
	srvA.signal(syscall.SIGTERM)
	if err := srvA.wait(t, 15*time.Second); err != nil {
		t.Fatalf("server a exited with %v, want 0", err)
	}
	out := srvA.out.String()
	for i := 0; i < n; i++ {
		if !regexp.MustCompile(`session ended.*device=drain-` + fmt.Sprint(i) + `.*reason=draining`).MatchString(out) {
			t.Errorf("server a did not end drain-%d as draining", i)
		}
	}
	if !strings.Contains(out, "drained") {
		t.Error("server a did not log the end of its drain")
	}
	for i := 0; i < n; i++ {
		d := waitOnline(t, "http://"+httpB, fmt.Sprintf("drain-%d", i), 30*time.Second)
		if d.Session.Node != "b" {
			t.Errorf("drain-%d on node %s", i, d.Session.Node)
		}
	}
}

// grpcurlPath builds grpcurl from the pinned tools module.
func grpcurlPath(t *testing.T) string {
	t.Helper()
	p := filepath.Join(binDir, "grpcurl")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	cmd := exec.Command("go", "build", "-modfile=tools/go.mod", "-o", p, "github.com/fullstorydev/grpcurl/cmd/grpcurl")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building grpcurl: %v\n%s", err, out)
	}
	return p
}
