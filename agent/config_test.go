package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/agent/backoff"
	"github.com/tetherhq/tether/agent/command"
)

func TestZeroConfigFieldsMeanDefaults(t *testing.T) {
	c := Config{ServerAddr: "x:1"}.WithDefaults()
	if c.OutputCap != 64<<10 || c.DefaultCommandTimeout != 60*time.Second || c.HelloTimeout != 10*time.Second ||
		c.Backoff.Initial != time.Second || c.Backoff.Max != time.Minute || c.Backoff.Min != 100*time.Millisecond ||
		c.StableAfter != 30*time.Second || c.InfoInterval != 30*time.Second || c.Version == "" || c.Logger == nil || c.InfoSource == nil {
		t.Fatalf("defaults = %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateRejectsBadConfigs(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no server", Config{}, "server address is empty"},
		{"bad device id", Config{ServerAddr: "x:1", DeviceID: "a b"}, "device id"},
		{"negative interval", Config{ServerAddr: "x:1", InfoInterval: -time.Second}, "info interval"},
		{"max below initial", Config{ServerAddr: "x:1", Backoff: backoff.Config{Initial: 5 * time.Second, Max: time.Second}}, "below the initial"},
		{"huge output cap", Config{ServerAddr: "x:1", OutputCap: command.MaxOutputCap + 1}, "output cap"},
		{"empty label name", Config{ServerAddr: "x:1", Labels: map[string]string{"": "x"}}, "label"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
			if _, err := New(tc.cfg); err == nil {
				t.Fatal("New accepted the config")
			}
		})
	}
}

func TestNewRejectsBadCommands(t *testing.T) {
	if _, err := New(Config{ServerAddr: "x:1", DeviceID: "d", Commands: map[string]command.Spec{"echo": {Argv: []string{"/bin/echo"}}}}); err == nil {
		t.Fatal("a redefined built-in was accepted")
	}
}
