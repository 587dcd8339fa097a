package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// makeEnv is the environment for a nested make: without the variables of a
// make that may be running this test (`make test`), whose jobserver this one
// cannot use.
func makeEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "DESTDIR", "PREFIX", "BIN":
		default:
			env = append(env, kv)
		}
	}
	return env
}

// makeInstall runs `make install DESTDIR=dest` in the repository. The
// binaries are built into build (BIN), a directory of the test's own, rather
// than the repository's bin/, which a concurrent `make build` may be
// rewriting.
func makeInstall(t *testing.T, dest, build string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "-C", "..", "install", "DESTDIR="+dest, "BIN="+build)
	cmd.Env = makeEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make install DESTDIR=%s: %v\n%s", dest, err, out)
	}
	return string(out)
}

// stampedVersion finds the version the Makefile links into the binaries.
var stampedVersion = regexp.MustCompile(`internal/version\.Version=([^' ]+)`)

var units = []string{"tether-server.service", "tether-agent.service", "tether-gateway.service"}

// TestInstallProducesATreeSystemdAccepts: `make install DESTDIR=…` lays out
// the binaries, the units and the configs, every unit passes
// `systemd-analyze verify` against the installed binaries, and a second
// install keeps the configs an operator edited.
func TestInstallProducesATreeSystemdAccepts(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	dest, build := t.TempDir(), t.TempDir()
	out := makeInstall(t, dest, build)
	stamp := stampedVersion.FindStringSubmatch(out)
	if stamp == nil {
		t.Fatalf("make install did not build with a version stamp (-X ...version.Version=...):\n%s", out)
	}

	files := map[string]os.FileMode{
		"usr/local/bin/tether-server":  0o755,
		"usr/local/bin/tether-agent":   0o755,
		"usr/local/bin/tether-gateway": 0o755,
		"etc/tether/agent.yaml":        0o640,
		"etc/tether/server.env":        0o640,
		"etc/tether/gateway.env":       0o640,
	}
	for _, u := range units {
		files["etc/systemd/system/"+u] = 0o644
	}
	for f, mode := range files {
		st, err := os.Stat(filepath.Join(dest, f))
		if err != nil {
			t.Errorf("not installed: %v", err)
			continue
		}
		if got := st.Mode().Perm(); !st.Mode().IsRegular() || got != mode {
			t.Errorf("%s: mode %v, want a regular file with %v", f, st.Mode(), mode)
		}
	}
	if t.Failed() {
		return
	}

	// The installed binaries report the version the Makefile stamped.
	for _, bin := range []string{"tether-server", "tether-agent", "tether-gateway"} {
		if v := checkVersion(t, filepath.Join(dest, "usr/local/bin", bin), bin); v != "" && v != stamp[1] {
			t.Errorf("installed %s --version says %s, want the Makefile's %s", bin, v, stamp[1])
		}
	}

	t.Run("systemd-analyze verify", func(t *testing.T) {
		analyze, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Skip("systemd-analyze not installed (apt-get install systemd; `make deps` does it): cannot verify the units")
		}
		verifyDir := t.TempDir()
		for _, u := range units {
			body, err := os.ReadFile(filepath.Join(dest, "etc/systemd/system", u))
			if err != nil {
				t.Fatal(err)
			}
			// verify checks that ExecStart is executable: point it at the
			// binaries just installed.
			text := strings.ReplaceAll(string(body), "/usr/local/bin/", filepath.Join(dest, "usr/local/bin")+"/")
			if !strings.Contains(text, "ExecStart="+filepath.Join(dest, "usr/local/bin", strings.TrimSuffix(u, ".service"))) {
				t.Errorf("%s: ExecStart does not run the installed %s:\n%s", u, strings.TrimSuffix(u, ".service"), body)
				continue
			}
			p := filepath.Join(verifyDir, u)
			if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			cmd := exec.CommandContext(ctx, analyze, "verify", "--man=no", p)
			cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0", "SYSTEMD_PAGER=cat")
			out, err := cmd.CombinedOutput()
			cancel()
			if err != nil {
				t.Errorf("systemd-analyze verify %s: %v\n%s", u, err, out)
				continue
			}
			// verify exits 0 on unknown keys and bad values: any line
			// about the unit is a failure.
			for _, line := range strings.Split(string(out), "\n") {
				if strings.Contains(line, u) {
					t.Errorf("systemd-analyze verify warns: %s", line)
				}
			}
		}
	})

	t.Run("reinstall keeps edited configs", func(t *testing.T) {
		cfg := filepath.Join(dest, "etc/tether/server.env")
		edited := []byte("TETHER_LISTEN=0.0.0.0:7443\n")
		if err := os.WriteFile(cfg, edited, 0o640); err != nil {
			t.Fatal(err)
		}
		out := makeInstall(t, dest, build)
		if got, _ := os.ReadFile(cfg); string(got) != string(edited) {
			t.Errorf("make install overwrote an edited %s:\n%s\nmake said:\n%s", cfg, got, out)
		}
	})
}

// versionLine is what --version prints: the binary's name and a version.
var versionLine = regexp.MustCompile(`^(tether-server|tether-agent|tether-gateway) (\S+)( \(revision [0-9a-f]+(, modified)?\))?\n$`)

// checkVersion runs path --version and checks that it names bin and a
// version, exits 0 and prints nothing else.
func checkVersion(t *testing.T, path, bin string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "--version")
	// --version is an action, never read from the environment.
	cmd.Env = append(os.Environ(), "TETHER_VERSION=true", "TETHER_LISTEN=not-an-address")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Errorf("%s --version: %v\n%s%s", path, err, out, stderr.String())
		return ""
	}
	m := versionLine.FindStringSubmatch(string(out))
	if m == nil || m[1] != bin {
		t.Errorf("%s --version printed %q, want %q followed by a version", path, out, bin)
		return ""
	}
	if stderr.Len() > 0 {
		t.Errorf("%s --version wrote to stderr: %s", path, stderr.String())
	}
	return m[2]
}

// TestVersionFlagOnEveryBinary: --version prints "NAME VERSION" and exits 0
// on all three binaries (as built by `go build`, without the Makefile's
// stamp).
func TestVersionFlagOnEveryBinary(t *testing.T) {
	for _, bin := range []string{"tether-server", "tether-agent", "tether-gateway"} {
		v := checkVersion(t, filepath.Join(binDir, bin), bin)
		if v == "" && !t.Failed() {
			t.Errorf("%s: empty version", bin)
		}
	}
}
