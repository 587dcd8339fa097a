package envflag

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

type flags struct {
	fs       *flag.FlagSet
	server   *string
	legacy   *bool
	interval *time.Duration
	version  *bool
}

func newFlags() flags {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return flags{
		fs:       fs,
		server:   fs.String("server", "127.0.0.1:7070", ""),
		legacy:   fs.Bool("legacy-no-pong", false, ""),
		interval: fs.Duration("ping-interval", 10*time.Second, ""),
		version:  fs.Bool("version", false, ""),
	}
}

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestPrecedence(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		env    map[string]string
		server string
		legacy bool
	}{
		{"defaults when neither is set", nil, nil, "127.0.0.1:7070", false},
		{"env over default", nil, map[string]string{"TETHER_SERVER": "env:1", "TETHER_LEGACY_NO_PONG": "true"}, "env:1", true},
		{"flag over env", []string{"--server", "flag:1", "--legacy-no-pong=false"}, map[string]string{"TETHER_SERVER": "env:1", "TETHER_LEGACY_NO_PONG": "true"}, "flag:1", false},
		{"empty env counts as unset", nil, map[string]string{"TETHER_SERVER": ""}, "127.0.0.1:7070", false},
		{"other prefixes are ignored", nil, map[string]string{"OTHER_SERVER": "x:1", "SERVER": "y:1"}, "127.0.0.1:7070", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFlags()
			if err := parse(f.fs, "TETHER", tc.args, env(tc.env)); err != nil {
				t.Fatal(err)
			}
			if *f.server != tc.server || *f.legacy != tc.legacy {
				t.Fatalf("server=%q legacy=%v, want %q %v", *f.server, *f.legacy, tc.server, tc.legacy)
			}
		})
	}
}

func TestVisitSeesFlagsSetFromTheEnvironment(t *testing.T) {
	f := newFlags()
	if err := parse(f.fs, "TETHER", nil, env(map[string]string{"TETHER_PING_INTERVAL": "3s"})); err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if !set["ping-interval"] || set["server"] || *f.interval != 3*time.Second {
		t.Fatalf("set=%v interval=%v", set, *f.interval)
	}
}

func TestABadEnvValueNamesTheVariable(t *testing.T) {
	f := newFlags()
	err := parse(f.fs, "TETHER", nil, env(map[string]string{"TETHER_PING_INTERVAL": "10"}))
	if err == nil || !strings.Contains(err.Error(), `TETHER_PING_INTERVAL="10"`) || !strings.Contains(err.Error(), "-ping-interval") {
		t.Fatalf("err = %v, want one naming TETHER_PING_INTERVAL and the flag", err)
	}
}

func TestVersionIsNeverTakenFromTheEnvironment(t *testing.T) {
	f := newFlags()
	if err := parse(f.fs, "TETHER", nil, env(map[string]string{"TETHER_VERSION": "1.2.3"})); err != nil {
		t.Fatal(err)
	}
	if *f.version {
		t.Fatal("TETHER_VERSION turned on --version")
	}
}

func TestCommandLineErrorsAndHelpPassThrough(t *testing.T) {
	f := newFlags()
	if err := parse(f.fs, "TETHER", []string{"-h"}, env(nil)); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: err = %v, want flag.ErrHelp", err)
	}
	f = newFlags()
	if err := parse(f.fs, "TETHER", []string{"--nope"}, env(nil)); err == nil {
		t.Fatal("want an error for an unknown flag")
	}
}

func TestEnvName(t *testing.T) {
	for _, tc := range []struct{ prefix, name, want string }{
		{"TETHER", "log-level", "TETHER_LOG_LEVEL"},
		{"TETHER_", "server", "TETHER_SERVER"},
		{"TETHER", "a.b-c", "TETHER_A_B_C"},
		{"", "device-id", "DEVICE_ID"},
	} {
		if got := EnvName(tc.prefix, tc.name); got != tc.want {
			t.Errorf("EnvName(%q, %q) = %q, want %q", tc.prefix, tc.name, got, tc.want)
		}
	}
}

func TestParseReadsTheRealEnvironment(t *testing.T) {
	t.Setenv("TETHERTEST_SERVER", "real:1")
	f := newFlags()
	if err := Parse(f.fs, "TETHERTEST", nil); err != nil {
		t.Fatal(err)
	}
	if *f.server != "real:1" {
		t.Fatalf("server = %q", *f.server)
	}
}
