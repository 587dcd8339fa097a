package command

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

func newRunner(t *testing.T, opts Options) *Runner {
	t.Helper()
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func run(r *Runner, name string, timeout time.Duration, args ...string) *tetherv1.CommandResult {
	c := &tetherv1.Command{CommandId: "c1", Name: name, Args: args}
	if timeout > 0 {
		c.Timeout = durationpb.New(timeout)
	}
	return r.Run(context.Background(), c)
}

// need skips when a program the test runs is missing from this machine.
func need(t *testing.T, path string) string {
	t.Helper()
	if _, err := exec.LookPath(path); err != nil {
		t.Skipf("%s not available: %v", path, err)
	}
	return path
}

func TestEchoJoinsItsArgsWithSpaces(t *testing.T) {
	r := newRunner(t, Options{})
	res := run(r, "echo", 0, "hello", "$(id)", "`uname`", "a;b")
	if res.Output != "hello $(id) `uname` a;b\n" || res.ExitCode != 0 || res.Error != "" || res.CommandId != "c1" {
		t.Fatalf("result = %+v", res)
	}
	if res.Duration == nil {
		t.Fatal("no duration")
	}
}

func TestConfiguredArgvIsNeverShellInterpreted(t *testing.T) {
	echo := need(t, "/bin/echo")
	r := newRunner(t, Options{Commands: map[string]Spec{"say": {Argv: []string{echo, "said:"}}}})
	res := run(r, "say", 0, "$(id)", "; rm -rf /", "*")
	if want := "said: $(id) ; rm -rf / *\n"; res.Output != want || res.ExitCode != 0 || res.Error != "" {
		t.Fatalf("result = %+v, want output %q", res, want)
	}
}

func TestUnknownCommandIsRefusedWithTheAllowList(t *testing.T) {
	r := newRunner(t, Options{Commands: map[string]Spec{"uptime": {Argv: []string{"/usr/bin/uptime"}}}})
	res := run(r, "reboot", 0)
	want := `unknown command "reboot"; allowed: echo, info, uptime`
	if res.Error != want || res.ExitCode != ExitRefused || res.Output != "" {
		t.Fatalf("result = %+v, want error %q", res, want)
	}
}

func TestInfoReturnsTheDeviceInfoAsJSON(t *testing.T) {
	r := newRunner(t, Options{Info: func() (*tetherv1.DeviceInfo, error) {
		return &tetherv1.DeviceInfo{Hostname: "kiosk-7", Mac: "aa:bb:cc:dd:ee:ff", Labels: map[string]string{"site": "lobby"}}, nil
	}})
	res := run(r, "info", 0)
	var got struct {
		Hostname string            `json:"hostname"`
		Mac      string            `json:"mac"`
		Labels   map[string]string `json:"labels"`
	}
	if err := json.Unmarshal([]byte(res.Output), &got); err != nil || res.ExitCode != 0 {
		t.Fatalf("result %+v: %v", res, err)
	}
	if got.Hostname != "kiosk-7" || got.Mac != "aa:bb:cc:dd:ee:ff" || got.Labels["site"] != "lobby" {
		t.Fatalf("info = %+v", got)
	}
	if res := run(newRunner(t, Options{}), "info", 0); res.Error == "" || res.ExitCode != ExitRefused {
		t.Fatalf("info without a source = %+v, want an error", res)
	}
}

func TestArgumentLimits(t *testing.T) {
	r := newRunner(t, Options{})
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"too many", make([]string, MaxArgs+1), "at most 64"},
		{"too long", []string{strings.Repeat("x", MaxArgBytes+1)}, "at most 4096"},
		{"NUL byte", []string{"a\x00b"}, "NUL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := run(r, "echo", 0, tc.args...)
			if res.ExitCode != ExitRefused || !strings.Contains(res.Error, tc.want) || res.Output != "" {
				t.Fatalf("result = %+v, want a refusal mentioning %q", res, tc.want)
			}
		})
	}
	if res := run(r, "echo", 0, make([]string, MaxArgs)...); res.Error != "" {
		t.Fatalf("exactly %d args refused: %s", MaxArgs, res.Error)
	}
}

func TestTimeoutKillsTheProcess(t *testing.T) {
	sleep := need(t, "/bin/sleep")
	for _, tc := range []struct {
		name    string
		spec    time.Duration
		command time.Duration
		want    string
	}{
		{"the command's timeout", 0, 50 * time.Millisecond, "timed out after 50ms"},
		{"the configured timeout", 50 * time.Millisecond, time.Hour, "timed out after 50ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRunner(t, Options{Commands: map[string]Spec{"sleep": {Argv: []string{sleep, "30"}, Timeout: tc.spec}}})
			res := run(r, "sleep", tc.command)
			if res.ExitCode != ExitTimedOut || !strings.Contains(res.Error, tc.want) {
				t.Fatalf("result = %+v, want a timeout (%q)", res, tc.want)
			}
		})
	}
}

func TestTimeoutKillsTheWholeProcessGroup(t *testing.T) {
	sh := need(t, "/bin/sh")
	need(t, "sleep")
	r := newRunner(t, Options{Commands: map[string]Spec{"tree": {Argv: []string{sh, "-c", "sleep 30 & echo $!; wait"}}}})
	res := run(r, "tree", 200*time.Millisecond)
	if res.ExitCode != ExitTimedOut {
		t.Fatalf("result = %+v, want a timeout", res)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(res.Output))
	if err != nil {
		t.Fatalf("output %q: %v", res.Output, err)
	}
	// The grandchild must be gone or a zombie waiting for its reaper.
	for i := 0; ; i++ {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		if f := strings.Fields(string(stat)); len(f) > 2 && (f[2] == "Z" || f[2] == "X") {
			return
		}
		if i == 100 {
			t.Fatalf("grandchild %d still running after the timeout: %s", pid, stat)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestOutputIsCombinedAndCapped(t *testing.T) {
	sh := need(t, "/bin/sh")
	r := newRunner(t, Options{OutputCap: 1000, Commands: map[string]Spec{
		"both":  {Argv: []string{sh, "-c", "echo out; echo err >&2"}},
		"flood": {Argv: []string{need(t, "seq"), "1", "100000"}},
	}})
	res := run(r, "both", 0)
	if res.Output != "out\nerr\n" || res.OutputTruncated {
		t.Fatalf("combined output = %q truncated=%v", res.Output, res.OutputTruncated)
	}
	res = run(r, "flood", 0)
	if len(res.Output) != 1000 || !res.OutputTruncated || res.ExitCode != 0 || !strings.HasPrefix(res.Output, "1\n2\n3\n") {
		t.Fatalf("flood: %d bytes, truncated=%v, exit=%d, error=%q", len(res.Output), res.OutputTruncated, res.ExitCode, res.Error)
	}
}

func TestTheCapNeverSplitsARune(t *testing.T) {
	r := newRunner(t, Options{OutputCap: 2})
	res := run(r, "echo", 0, "aé")
	if res.Output != "a" || !res.OutputTruncated {
		t.Fatalf("output %q truncated=%v, want %q cut before the half rune", res.Output, res.OutputTruncated, "a")
	}
}

func TestInvalidUTF8OutputIsReplaced(t *testing.T) {
	printf := need(t, "printf")
	r := newRunner(t, Options{Commands: map[string]Spec{"bin": {Argv: []string{printf, `a\377b`}}}})
	res := run(r, "bin", 0)
	if res.Output != "a\uFFFDb" || !utf8.ValidString(res.Output) {
		t.Fatalf("output %q, want invalid bytes replaced", res.Output)
	}
}

func TestExitCodesAndStartFailures(t *testing.T) {
	r := newRunner(t, Options{Commands: map[string]Spec{
		"false":   {Argv: []string{need(t, "false")}},
		"missing": {Argv: []string{"/nonexistent/tether-test-binary"}},
	}})
	if res := run(r, "false", 0); res.ExitCode != 1 || res.Error != "" {
		t.Fatalf("false: %+v, want exit 1 and no error", res)
	}
	if res := run(r, "missing", 0); res.ExitCode != ExitRefused || !strings.Contains(res.Error, "no such file") {
		t.Fatalf("missing: %+v, want a start failure", res)
	}
}

func TestCancellingTheContextStopsTheCommand(t *testing.T) {
	sleep := need(t, "/bin/sleep")
	r := newRunner(t, Options{Commands: map[string]Spec{"sleep": {Argv: []string{sleep, "30"}}}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res := r.Run(ctx, &tetherv1.Command{Name: "sleep"})
	if res.ExitCode != ExitTimedOut || !strings.Contains(res.Error, "cancelled") {
		t.Fatalf("result = %+v, want cancelled", res)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"redefined built-in", Options{Commands: map[string]Spec{"echo": {Argv: []string{"/bin/echo"}}}}, "built-in"},
		{"empty argv", Options{Commands: map[string]Spec{"x": {}}}, "argv is empty"},
		{"bad name", Options{Commands: map[string]Spec{"a b": {Argv: []string{"/bin/true"}}}}, "command name"},
		{"negative timeout", Options{Commands: map[string]Spec{"x": {Argv: []string{"/bin/true"}, Timeout: -1}}}, "negative"},
		{"huge cap", Options{OutputCap: MaxOutputCap + 1}, "output cap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestSpecsReportNamesAndShapesButNeverArgv(t *testing.T) {
	r := newRunner(t, Options{Commands: map[string]Spec{
		"restart": {Argv: []string{"/usr/local/sbin/secret-restart", "--unit"}, Usage: "<unit>", MaxArgs: 1, Timeout: 5 * time.Second},
		"uptime":  {Argv: []string{"/usr/bin/uptime"}, NoArgs: true},
	}})
	specs := r.Specs()
	got := map[string]*tetherv1.CommandSpec{}
	var names []string
	for _, s := range specs {
		got[s.GetName()] = s
		names = append(names, s.GetName())
	}
	if strings.Join(names, ",") != "echo,info,restart,uptime" {
		t.Fatalf("names = %v", names)
	}
	if s := got["restart"]; s.GetUsage() != "<unit>" || s.GetMaxArgs() != 1 || s.GetTimeout().AsDuration() != 5*time.Second {
		t.Fatalf("restart = %v", s)
	}
	if s := got["uptime"]; s.GetMaxArgs() != 0 || s.GetTimeout() != nil {
		t.Fatalf("uptime = %v", s)
	}
	if s := got["echo"]; s.GetMaxArgs() != MaxArgs || s.GetUsage() == "" {
		t.Fatalf("echo = %v", s)
	}
	if s := got["info"]; s.GetMaxArgs() != 0 {
		t.Fatalf("info = %v", s)
	}
	b, _ := json.Marshal(specs)
	if strings.Contains(string(b), "secret-restart") || strings.Contains(string(b), "/usr/bin") {
		t.Fatalf("specs leak argv: %s", b)
	}
}

func TestMaxArgsIsEnforced(t *testing.T) {
	echo := need(t, "/bin/echo")
	r := newRunner(t, Options{Commands: map[string]Spec{
		"one":  {Argv: []string{echo}, MaxArgs: 1},
		"none": {Argv: []string{echo}, NoArgs: true},
	}})
	if res := run(r, "one", 0, "a"); res.ExitCode != 0 {
		t.Fatalf("one arg: %+v", res)
	}
	for _, c := range []struct {
		name string
		args []string
	}{{"one", []string{"a", "b"}}, {"none", []string{"a"}}, {"info", []string{"x"}}} {
		res := run(r, c.name, 0, c.args...)
		if res.ExitCode != ExitRefused || !strings.Contains(res.Error, "takes at most") {
			t.Fatalf("%s %v: %+v", c.name, c.args, res)
		}
	}
}
