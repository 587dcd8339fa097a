package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// scriptWorld is a fake system for the maintainer scripts: a root directory
// (TETHER_PKG_ROOT) with /etc/tether, a stub systemctl first on PATH that
// records its arguments, and a switch for "systemd is running"
// (TETHER_PKG_SYSTEMD_RUN names a directory that exists, or not).
type scriptWorld struct {
	scripts, root, log, runDir string
}

func newScriptWorld(t *testing.T, pkg string, systemd bool) *scriptWorld {
	t.Helper()
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	dir := t.TempDir()
	w := &scriptWorld{scripts: filepath.Join(dir, "scripts"), root: filepath.Join(dir, "root"), log: filepath.Join(dir, "systemctl.log"), runDir: filepath.Join(dir, "run-systemd")}
	run(t, nil, "./package.sh", "--scripts", w.scripts, pkg)
	stub := filepath.Join(dir, "bin")
	for _, d := range []string{stub, filepath.Join(w.root, "etc/tether")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(stub, "systemctl"), []byte("#!/bin/sh\necho \"$*\" >> '"+w.log+"'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if systemd {
		if err := os.Mkdir(w.runDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", stub+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("TETHER_PKG_ROOT", w.root)
	t.Setenv("TETHER_PKG_SYSTEMD_RUN", w.runDir)
	return w
}

func (w *scriptWorld) write(t *testing.T, rel, body string) {
	t.Helper()
	p := filepath.Join(w.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o640); err != nil {
		t.Fatal(err)
	}
}

// run runs one script and returns the systemctl calls it made and its output.
func (w *scriptWorld) run(t *testing.T, script string, args ...string) (calls []string, out string) {
	t.Helper()
	_ = os.Remove(w.log)
	cmd := exec.Command("sh", append([]string{filepath.Join(w.scripts, script+".sh")}, args...)...)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", script, args, err, b)
	}
	if l, err := os.ReadFile(w.log); err == nil {
		calls = strings.Split(strings.TrimSpace(string(l)), "\n")
	}
	return calls, string(b)
}

func TestMaintainerScriptsStartTheServiceOnlyWhenTheConfigNamesAServer(t *testing.T) {
	example, err := os.ReadFile("../agent/systemd/agent.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	serverEnv, _ := os.ReadFile("../server/systemd/server.example.env")
	gatewayEnv, _ := os.ReadFile("../gateway/systemd/gateway.example.env")
	for _, tc := range []struct {
		name, pkg string
		files     map[string]string
		wantStart bool
	}{
		{"agent with the example config (a placeholder server)", "tether-agent",
			map[string]string{"etc/tether/agent.yaml": string(example)}, false},
		{"agent with a real server", "tether-agent",
			map[string]string{"etc/tether/agent.yaml": strings.Replace(string(example), "server: tether.example.com:7070", "server: 'tether.lan:7070' # ours", 1)}, true},
		{"agent with the server commented out", "tether-agent",
			map[string]string{"etc/tether/agent.yaml": strings.Replace(string(example), "server: tether.example.com:7070", "# server: tether.lan:7070", 1)}, false},
		{"agent with TETHER_SERVER in /etc/default", "tether-agent",
			map[string]string{"etc/tether/agent.yaml": string(example), "etc/default/tether-agent": "TETHER_SERVER=\"10.1.2.3:7070\"\n"}, true},
		{"gateway with the example env (a local server)", "tether-gateway",
			map[string]string{"etc/tether/gateway.env": string(gatewayEnv)}, true},
		{"gateway naming no server", "tether-gateway",
			map[string]string{"etc/tether/gateway.env": "#TETHER_SERVER=10.0.0.5:7070\n"}, false},
		{"server with the example env (its certificate missing)", "tether-server",
			map[string]string{"etc/tether/server.env": string(serverEnv)}, false},
		{"server with its certificate in place", "tether-server",
			map[string]string{"etc/tether/server.env": string(serverEnv), "etc/tether/tls/server.crt": "cert"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newScriptWorld(t, tc.pkg, true)
			for p, body := range tc.files {
				w.write(t, p, body)
			}
			unit := tc.pkg + ".service"
			want := []string{"daemon-reload", "enable " + unit}
			if tc.wantStart {
				want = append(want, "start "+unit)
			}
			for _, args := range [][]string{{"configure", ""}, {"1"}} { // deb first install, rpm first install
				calls, out := w.run(t, "postinstall", args...)
				if !slices.Equal(calls, want) {
					t.Errorf("postinstall %q: systemctl calls %q, want %q\n%s", args, calls, want, out)
				}
				if !tc.wantStart && !strings.Contains(out, "not started") {
					t.Errorf("postinstall %q does not say why it did not start the service:\n%s", args, out)
				}
			}
		})
	}
}

func TestMaintainerScriptsOnUpgradeRestartOnlyARunningService(t *testing.T) {
	w := newScriptWorld(t, "tether-agent", true)
	w.write(t, "etc/tether/agent.yaml", "server: tether.lan:7070\n")
	want := []string{"daemon-reload", "try-restart tether-agent.service"}
	for _, args := range [][]string{{"configure", "0.9.0-1"}, {"2"}, {"abort-upgrade", "0.9.0-1"}} {
		if calls, out := w.run(t, "postinstall", args...); !slices.Equal(calls, want) {
			t.Errorf("postinstall %q: systemctl calls %q, want %q\n%s", args, calls, want, out)
		}
	}
	// The old package's prerm/postrm during an upgrade touch nothing.
	for _, step := range []struct {
		script string
		args   []string
	}{{"preremove", []string{"upgrade", "1.0.0-1"}}, {"preremove", []string{"1"}}, {"postremove", []string{"upgrade", "1.0.0-1"}}, {"postremove", []string{"1"}}} {
		if calls, _ := w.run(t, step.script, step.args...); len(calls) != 0 {
			t.Errorf("%s %q during an upgrade called systemctl %q", step.script, step.args, calls)
		}
	}
}

func TestMaintainerScriptsWithoutSystemdOnlyEnableTheUnit(t *testing.T) {
	w := newScriptWorld(t, "tether-agent", false) // a container or a chroot: no /run/systemd/system
	w.write(t, "etc/tether/agent.yaml", "server: tether.lan:7070\n")
	calls, out := w.run(t, "postinstall", "configure", "")
	if want := []string{"enable tether-agent.service"}; !slices.Equal(calls, want) {
		t.Errorf("postinstall: systemctl calls %q, want %q (offline enable only)", calls, want)
	}
	if !strings.Contains(out, "systemd is not running") {
		t.Errorf("postinstall does not say systemd is not running:\n%s", out)
	}
	if calls, _ := w.run(t, "postinstall", "configure", "0.9.0-1"); len(calls) != 0 {
		t.Errorf("upgrade without systemd called systemctl %q", calls)
	}
	if calls, _ := w.run(t, "preremove", "remove"); len(calls) != 0 {
		t.Errorf("prerm remove without systemd called systemctl %q", calls)
	}
	if calls, _ := w.run(t, "postremove", "remove"); len(calls) != 0 {
		t.Errorf("postrm remove without systemd called systemctl %q", calls)
	}
}

func TestMaintainerScriptsRemovalStopsAndPurgeCleansUp(t *testing.T) {
	w := newScriptWorld(t, "tether-agent", true)
	if calls, _ := w.run(t, "preremove", "remove"); !slices.Equal(calls, []string{"stop tether-agent.service"}) {
		t.Errorf("deb prerm remove: systemctl calls %q, want a stop", calls)
	}
	if calls, _ := w.run(t, "preremove", "0"); !slices.Equal(calls, []string{"stop tether-agent.service", "--no-reload disable tether-agent.service"}) {
		t.Errorf("rpm %%preun 0: systemctl calls %q, want stop and disable", calls)
	}
	if calls, _ := w.run(t, "postremove", "remove"); !slices.Equal(calls, []string{"daemon-reload"}) {
		t.Errorf("deb postrm remove: systemctl calls %q, want a daemon-reload", calls)
	}

	// Purge: the enable link and the state directory go; /etc/tether goes
	// when empty (dpkg has removed the conffile by then).
	link := filepath.Join(w.root, "etc/systemd/system/multi-user.target.wants/tether-agent.service")
	other := filepath.Join(w.root, "etc/systemd/system/multi-user.target.wants/other.service")
	for _, l := range []string{link, other} {
		if err := os.MkdirAll(filepath.Dir(l), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/usr/lib/systemd/system/"+filepath.Base(l), l); err != nil {
			t.Fatal(err)
		}
	}
	w.write(t, "var/lib/tether-agent/state", "x")
	if calls, _ := w.run(t, "postremove", "purge"); !slices.Equal(calls, []string{"daemon-reload"}) {
		t.Errorf("deb postrm purge: systemctl calls %q", calls)
	}
	for _, gone := range []string{link, filepath.Join(w.root, "var/lib/tether-agent"), filepath.Join(w.root, "etc/tether")} {
		if _, err := os.Lstat(gone); err == nil {
			t.Errorf("purge left %s", gone)
		}
	}
	if _, err := os.Lstat(other); err != nil {
		t.Errorf("purge removed another unit's link: %v", err)
	}
}
