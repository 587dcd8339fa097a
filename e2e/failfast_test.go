package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/envflag"
)

// TestBadValuesStopTheBinariesWithOneLine: each mistake the issue lists
// stops the binary at once with exit status 1 and one line on stderr that
// names the flag or variable.
func TestBadValuesStopTheBinariesWithOneLine(t *testing.T) {
	for _, tc := range []struct {
		bin  string
		args []string
		env  []string
		want string
	}{
		{"tether-agent", []string{"--server", "http://127.0.0.1:7070", "--device-id", "x"}, nil, "give host:port without http://"},
		{"tether-agent", []string{"--server", "127.0.0.1", "--device-id", "x"}, nil, `"127.0.0.1": missing port`},
		{"tether-agent", []string{"--device-id", "x"}, []string{"TETHER_SERVR=127.0.0.1:7070"}, "did you mean TETHER_SERVER?"},
		{"tether-server", []string{"--ping-interval", "5"}, nil, `--ping-interval "5": want a duration with a unit`},
		{"tether-server", []string{"--lease-ttl", "0"}, nil, "--lease-ttl 0s: must be positive"},
		{"tether-server", nil, []string{"TETHER_PING_INTERVAL=0s"}, "TETHER_PING_INTERVAL=0s: must be positive"},
		{"tether-server", []string{"--metrics", "127.0.0.1"}, nil, "--metrics 127.0.0.1: missing port"},
		{"tether-server", []string{"--listn", ":7070"}, nil, "unknown flag --listn (did you mean --listen?"},
		{"tether-gateway", nil, []string{"TETHER_CORS_ORIGIN=*"}, "did you mean TETHER_CORS_ORIGINS?"},
	} {
		cmd := exec.Command(filepath.Join(binDir, tc.bin), tc.args...)
		cmd.Env = append(os.Environ(), tc.env...)
		out, err := cmd.CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if !ok || ee.ExitCode() != 1 || len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
			t.Errorf("%s %v %v: exit %v, output:\n%s\nwant one line containing %q", tc.bin, tc.env, tc.args, err, out, tc.want)
		}
	}
}

// TestEveryFlagIsKnownToEnvflag: envflag.Known lists every flag of every
// binary, so that one binary tolerates another's TETHER_* variables in a
// shared environment.
func TestEveryFlagIsKnownToEnvflag(t *testing.T) {
	known := map[string]bool{}
	for _, n := range envflag.Known {
		known[n] = true
	}
	flagLine := regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`)
	for _, bin := range []string{"tether-server", "tether-agent", "tether-gateway"} {
		out, _ := exec.Command(filepath.Join(binDir, bin), "--help").CombinedOutput()
		names := flagLine.FindAllStringSubmatch(string(out), -1)
		if len(names) < 5 {
			t.Fatalf("%s --help lists %d flags:\n%s", bin, len(names), out)
		}
		for _, m := range names {
			if !known[m[1]] {
				t.Errorf("%s --%s is missing from envflag.Known", bin, m[1])
			}
		}
	}
}

// TestMakeRunFailsWhenItsPortsAreTaken: scripts/run.sh exits non-zero
// without the "Tether is running" banner when a port is taken, or when the
// server stops before it listens.
func TestMakeRunFailsWhenItsPortsAreTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	run := func(metrics string, extra ...string) (int, string) {
		cmd := exec.Command("bash", "../scripts/run.sh")
		cmd.Env = append(os.Environ(), "BIN="+binDir, "TETHER_LISTEN="+freeAddr(t), "TETHER_HTTP="+freeAddr(t), "TETHER_METRICS="+metrics)
		cmd.Env = append(cmd.Env, extra...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	code, out := run(taken.Addr().String())
	if code == 0 || strings.Contains(out, "Tether is running") || !strings.Contains(out, taken.Addr().String()+" is already in use") {
		t.Errorf("a taken port: exit %d, output:\n%s", code, out)
	}
	code, out = run(freeAddr(t), "TETHER_LEASE_TTL=0s")
	if code == 0 || strings.Contains(out, "Tether is running") || !strings.Contains(out, "exited (status 1) before it was listening") {
		t.Errorf("a server that stops at once: exit %d, output:\n%s", code, out)
	}
}
