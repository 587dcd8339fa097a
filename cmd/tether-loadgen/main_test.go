package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseFlagsAndEnvironment(t *testing.T) {
	t.Setenv("TETHER_LOADGEN_DEVICES", "7")
	t.Setenv("TETHER_LOADGEN_LEGACY_FRACTION", "0.25")
	t.Setenv("TETHER_LOADGEN_SERVER", "env:1") // the flag wins
	var stderr bytes.Buffer
	o, err := parseFlags([]string{
		"--server", "a:1,b:2", "--ramp", "100/s", "--source-ips", "127.0.0.2-127.0.0.3",
		"--duration", "2m", "--commands-rate", "5", "--reconnect=false", "--json", "--id-prefix", "x-",
	}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	c := o.cfg
	if !slices.Equal(c.Servers, []string{"a:1", "b:2"}) || c.Devices != 7 || c.LegacyFraction != 0.25 || c.Ramp != 100 ||
		c.Duration != 2*time.Minute || c.CommandsRate != 5 || c.Reconnect || !o.json || c.IDPrefix != "x-" ||
		!slices.Equal(c.SourceIPs, []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")}) {
		t.Errorf("config %+v json=%v", c, o.json)
	}
	if c.WindowSize != 64<<10 {
		t.Errorf("window %d", c.WindowSize)
	}

	o, err = parseFlags(nil, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if !o.cfg.Reconnect || o.cfg.ReportEvery != 5*time.Second || !strings.HasPrefix(o.cfg.IDPrefix, "loadgen-") || o.cfg.ReadBufferSize != 8<<10 {
		t.Errorf("defaults %+v", o.cfg)
	}

	for _, bad := range [][]string{
		{"--ramp", "fast"}, {"--commands-rate", "-3"}, {"--source-ips", "nope"}, {"--server", "nohost"},
		{"--window", "1024"}, {"extra"},
	} {
		if _, err := parseFlags(bad, &stderr); err == nil {
			t.Errorf("parseFlags(%q) succeeded", bad)
		}
	}
}

func TestRunHelpAndErrors(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &stdout, &stderr); err != nil {
		t.Errorf("--help: %v", err)
	}
	if !strings.Contains(stderr.String(), "TETHER_LOADGEN_") {
		t.Errorf("usage does not mention the environment:\n%s", stderr.String())
	}
	if err := run(context.Background(), []string{"--devices", "0"}, &stdout, &stderr); err == nil {
		t.Error("--devices 0 succeeded")
	}
}

func TestRunPrintsJSONReport(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	var stdout, stderr bytes.Buffer
	err = run(context.Background(), []string{"--server", addr, "--devices", "2", "--duration", "300ms", "--reconnect=false", "--json"}, &stdout, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	var rep map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, stdout.String())
	}
	for _, k := range []string{"target_devices", "connected", "connect_failures_by_code", "closed_by_reason", "time_to_connect_all_seconds", "process"} {
		if _, ok := rep[k]; !ok {
			t.Errorf("JSON report lacks %q:\n%s", k, stdout.String())
		}
	}
	if rep["target_devices"] != float64(2) {
		t.Errorf("target_devices = %v", rep["target_devices"])
	}
}
