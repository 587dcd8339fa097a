package systemd

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const unitName = "tether-agent.service"

// directives parses the unit into "Section.Key" -> values.
func directives(t *testing.T, body string) map[string][]string {
	t.Helper()
	m := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("malformed line %q", line)
			}
			m[section+"."+k] = append(m[section+"."+k], v)
		}
	}
	return m
}

func readUnit(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(unitName)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestUnitHasTheDirectivesTheAgentReliesOn(t *testing.T) {
	d := directives(t, readUnit(t))
	for key, want := range map[string]string{
		"Service.Type":                    "notify",
		"Service.NotifyAccess":            "main",
		"Service.Restart":                 "always",
		"Service.WatchdogSec":             "30s",
		"Service.ExecStart":               "/usr/local/bin/tether-agent --config /etc/tether/agent.yaml",
		"Service.EnvironmentFile":         "-/etc/default/tether-agent",
		"Service.StateDirectory":          "tether-agent",
		"Service.NoNewPrivileges":         "yes",
		"Service.ProtectSystem":           "strict",
		"Service.ProtectHome":             "yes",
		"Service.PrivateTmp":              "yes",
		"Service.ProtectKernelTunables":   "yes",
		"Service.ProtectKernelModules":    "yes",
		"Service.RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
		"Unit.StartLimitIntervalSec":      "0",
		"Install.WantedBy":                "multi-user.target",
	} {
		if got := d[key]; len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want exactly %q", key, got, want)
		}
	}
	if len(d["Service.RestartSec"]) != 1 {
		t.Error("RestartSec missing")
	}
}

// TestUnitPassesSystemdAnalyzeVerify runs systemd-analyze verify on a copy of
// the unit whose ExecStart points at a binary that exists here (verify checks
// that the command is executable). Warnings about the unit fail the test,
// not only a non-zero exit: verify exits 0 on unknown keys.
func TestUnitPassesSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (apt-get install systemd; `make deps` does it): cannot verify the unit")
	}
	stand := "/bin/true"
	if _, err := os.Stat(stand); err != nil {
		stand = os.Args[0] // the test binary: certainly executable
	}
	body := strings.Replace(readUnit(t), "ExecStart=/usr/local/bin/tether-agent ", "ExecStart="+stand+" ", 1)
	if !strings.Contains(body, "ExecStart="+stand) {
		t.Fatal("could not rewrite ExecStart")
	}
	dir := t.TempDir()
	p := filepath.Join(dir, unitName)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(analyze, "verify", "--man=no", p)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0", "SYSTEMD_PAGER=cat")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, unitName) {
			t.Errorf("systemd-analyze verify warns: %s", line)
		}
	}
	if t.Failed() {
		t.Logf("full output:\n%s", out)
	}
}

// TestVerifyCatchesABrokenUnit makes sure the check above can fail.
func TestVerifyCatchesABrokenUnit(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	p := filepath.Join(t.TempDir(), unitName)
	if err := os.WriteFile(p, []byte("[Service]\nType=notify\nExecStart=/bin/true\nRestart=sometimes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(analyze, "verify", "--man=no", p).CombinedOutput()
	if !strings.Contains(string(out), unitName) {
		t.Fatalf("no warning for Restart=sometimes:\n%s", out)
	}
}
