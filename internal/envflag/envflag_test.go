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

func TestBadValuesGiveOneActionableLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"duration without unit on the command line", []string{"--ping-interval", "5"}, nil,
			`--ping-interval "5": want a duration with a unit, such as 10s, 500ms or 1m30s`},
		{"duration without unit in the environment", nil, map[string]string{"TETHER_PING_INTERVAL": "5"},
			`TETHER_PING_INTERVAL="5" (--ping-interval): want a duration with a unit, such as 10s, 500ms or 1m30s`},
		{"bad boolean", []string{"--legacy-no-pong=maybe"}, nil, `--legacy-no-pong "maybe": want true or false`},
		{"misspelled flag names the closest one", []string{"--sever", "x:1"}, nil, "unknown flag --sever (did you mean --server? see --help)"},
		{"flag without its value", []string{"--server"}, nil, "flag --server needs a value (--server=VALUE)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFlags()
			var usage strings.Builder
			f.fs.SetOutput(&usage)
			f.fs.Usage = func() { usage.WriteString("USAGE") }
			err := parse(f.fs, "TETHER", tc.args, env(tc.env))
			if err == nil || err.Error() != tc.want {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if usage.Len() > 0 {
				t.Fatalf("printed %q on a bad value; want only the returned error", usage.String())
			}
		})
	}
}

func TestHelpStillPrintsUsage(t *testing.T) {
	f := newFlags()
	var usage strings.Builder
	f.fs.Usage = func() { usage.WriteString("USAGE") }
	if err := parse(f.fs, "TETHER", []string{"-h"}, env(nil)); !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	if usage.String() != "USAGE" {
		t.Fatalf("usage = %q", usage.String())
	}
}

func TestUnknownVariables(t *testing.T) {
	for _, tc := range []struct {
		name    string
		environ []string
		want    string
	}{
		{"none", []string{"PATH=/bin", "TETHER_SERVER=x:1"}, ""},
		{"another binary's flag is tolerated", []string{"TETHER_REDIS=redis://x", "TETHER_CORS_ORIGINS=*"}, ""},
		{"harness variables are tolerated", []string{"TETHER_FAULTS=1", "TETHER_LOADGEN_DEVICES=5"}, ""},
		{"a typo names the closest variable", []string{"TETHER_SERVR=x:1"}, "unknown environment variable TETHER_SERVR (did you mean TETHER_SERVER? unset it or see --help)"},
		{"far from everything", []string{"TETHER_BANANAS=1"}, "unknown environment variable TETHER_BANANAS: no flag of this program reads it (unset it or see --help)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFlags()
			err := checkEnv(f.fs, "TETHER", tc.environ)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPositiveRefusesZeroAndNegativeDurations(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--ping-interval", "0"}, nil, "--ping-interval 0s: must be positive (e.g. 10s)"},
		{[]string{"--ping-interval=-1s"}, nil, "--ping-interval -1s: must be positive (e.g. 10s)"},
		{nil, map[string]string{"TETHER_PING_INTERVAL": "0s"}, "TETHER_PING_INTERVAL=0s: must be positive (e.g. 10s)"},
		{[]string{"--ping-interval", "2s"}, nil, ""},
	} {
		f := newFlags()
		if err := parse(f.fs, "TETHER", tc.args, env(tc.env)); err != nil {
			t.Fatal(err)
		}
		err := Positive(f.fs, "ping-interval")
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("%v %v: got %q, want %q", tc.args, tc.env, got, tc.want)
		}
	}
}

func TestHostPort(t *testing.T) {
	for _, tc := range []struct{ v, want string }{
		{"127.0.0.1:7070", ""},
		{":7070", ""},
		{"[::1]:0", ""},
		{"127.0.0.1", `--server 127.0.0.1: missing port (e.g. 127.0.0.1:7070)`},
		{"http://127.0.0.1:7070", `--server http://127.0.0.1:7070: want host:port, not a URL (e.g. 127.0.0.1:7070)`},
		{"a:b", `--server a:b: port "b" is not a number from 0 to 65535`},
	} {
		f := newFlags()
		if err := parse(f.fs, "TETHER", []string{"--server", tc.v}, env(nil)); err != nil {
			t.Fatal(err)
		}
		err := HostPort(f.fs, "server")
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.v, got, tc.want)
		}
	}
}

// TestDefaultsPrintWithoutPanics: flag.PrintDefaults builds a zero value of
// each flag's type to decide whether to show its default; the wrapper must
// answer String on it (tether-server --help printed a panic per flag).
func TestDefaultsPrintWithoutPanics(t *testing.T) {
	f := newFlags()
	if err := parse(f.fs, "TETHER", nil, env(nil)); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	f.fs.SetOutput(&out)
	f.fs.PrintDefaults()
	if strings.Contains(out.String(), "panic") || out.Len() == 0 {
		t.Fatalf("PrintDefaults:\n%s", out.String())
	}
}
