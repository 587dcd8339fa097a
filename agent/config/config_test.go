package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, body string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // not subject to the umask
		t.Fatal(err)
	}
	return p
}

const full = `
server: tether.example.com:7070
device_id: kiosk-07
labels:
  site: lobby
  role: kiosk
legacy_no_pong: true
output_cap: 4096
commands:
  uptime:
    argv: ["/usr/bin/uptime"]
    timeout: 5s
    max_args: 0
  restart-app:
    usage: "<unit>"
    max_args: 1
    argv: ["/usr/bin/systemctl", "restart", "app"]
`

func TestLoadReadsEveryField(t *testing.T) {
	f, err := Load(write(t, full, 0o640))
	if err != nil {
		t.Fatal(err)
	}
	if f.Server != "tether.example.com:7070" || f.DeviceID != "kiosk-07" || !f.LegacyNoPong || f.OutputCap != 4096 {
		t.Fatalf("file = %+v", f)
	}
	if f.Labels["site"] != "lobby" || f.Labels["role"] != "kiosk" {
		t.Fatalf("labels = %v", f.Labels)
	}
	specs := f.CommandSpecs()
	if s := specs["uptime"]; len(s.Argv) != 1 || s.Timeout != 5*time.Second || !s.NoArgs {
		t.Fatalf("uptime = %+v", s)
	}
	if s := specs["restart-app"]; len(s.Argv) != 3 || s.Timeout != 0 || s.Usage != "<unit>" || s.MaxArgs != 1 || s.NoArgs {
		t.Fatalf("restart-app = %+v", s)
	}
}

func TestUnknownFieldsAreRejectedClearly(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"top level", "serevr: x:1\n", `line 1: unknown field "serevr" in top level (known fields: server,`},
		{"in a command", "commands:\n  up:\n    argv: [/bin/true]\n    shell: true\n", `line 4: unknown field "shell" in a command (known fields: argv, timeout, usage, max_args)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(write(t, tc.body, 0o600))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestWritableByOthersIsRefused(t *testing.T) {
	for _, mode := range []os.FileMode{0o620, 0o602, 0o666, 0o777} {
		p := write(t, full, mode)
		_, err := Load(p)
		if err == nil || !strings.Contains(err.Error(), "group- or world-writable") || !strings.Contains(err.Error(), "chmod go-w") {
			t.Errorf("mode %04o: err = %v, want a permissions error", mode, err)
		}
	}
	for _, mode := range []os.FileMode{0o600, 0o640, 0o644, 0o400} {
		if _, err := Load(write(t, full, mode)); err != nil {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
}

func TestInvalidValuesAreRejected(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"bad duration", "commands:\n  up:\n    argv: [/bin/true]\n    timeout: 10\n", "missing unit"},
		{"negative duration", "commands:\n  up:\n    argv: [/bin/true]\n    timeout: -1s\n", "negative"},
		{"empty argv", "commands:\n  up:\n    timeout: 1s\n", "argv is empty"},
		{"built-in redefined", "commands:\n  echo:\n    argv: [/bin/echo]\n", "built-in"},
		{"bad command name", "commands:\n  \"a b\":\n    argv: [/bin/true]\n", "command name"},
		{"negative max_args", "commands:\n  up:\n    argv: [/bin/true]\n    max_args: -1\n", "max_args -1"},
		{"huge max_args", "commands:\n  up:\n    argv: [/bin/true]\n    max_args: 65\n", "max_args 65"},
		{"long usage", "commands:\n  up:\n    argv: [/bin/true]\n    usage: " + strings.Repeat("u", 129) + "\n", "usage is 129 bytes"},
		{"bad device id", "device_id: \"a/b\"\n", "device_id"},
		{"huge output cap", "output_cap: 100000000\n", "output_cap"},
		{"wrong type", "labels: [a, b]\n", "cannot unmarshal"},
		{"two documents", "server: a:1\n---\nserver: b:1\n", "more than one YAML document"},
		{"duplicate key", "server: a:1\nserver: b:1\n", "already defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestEmptyFileIsAnEmptyConfig(t *testing.T) {
	for _, body := range []string{"", "# only a comment\n"} {
		f, err := Load(write(t, body, 0o600))
		if err != nil {
			t.Fatal(err)
		}
		if f.Server != "" || len(f.Commands) != 0 {
			t.Fatalf("file = %+v", f)
		}
	}
}

func TestAMissingExplicitFileIsAnError(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "absent.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
}

func TestAMissingDefaultFileMeansDefaults(t *testing.T) {
	f, err := loadOptional(filepath.Join(t.TempDir(), "absent.yaml"))
	if err != nil || f == nil || f.Server != "" {
		t.Fatalf("file %+v, err %v; want an empty config", f, err)
	}
	if _, err := loadOptional(write(t, "bogus: 1\n", 0o600)); err == nil {
		t.Fatal("an existing default file must still be validated")
	}
}

func TestADirectoryIsNotAConfig(t *testing.T) {
	if _, err := Load(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("err = %v", err)
	}
}

func TestTheShippedExampleAndDemoConfigsLoad(t *testing.T) {
	for _, p := range []string{"../systemd/agent.example.yaml", "../../scripts/demo-agent.yaml"} {
		data, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) && strings.Contains(p, "scripts") {
			continue // another part of the tree
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(data); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

func TestServerMayBeAListOrCommaSeparated(t *testing.T) {
	for _, doc := range []string{
		"server: [a.example.com:7070, b.example.com:7070]\n",
		"server:\n  - a.example.com:7070\n  - b.example.com:7070\n",
		"server: a.example.com:7070,b.example.com:7070\n",
	} {
		f, err := Parse([]byte(doc))
		if err != nil {
			t.Fatalf("%q: %v", doc, err)
		}
		if f.Server != "a.example.com:7070,b.example.com:7070" {
			t.Errorf("%q: server = %q", doc, f.Server)
		}
	}
	if _, err := Parse([]byte("server: {a: 1}\n")); err == nil {
		t.Error("a mapping was accepted as server")
	}
}
