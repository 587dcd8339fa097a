package agent

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestParseServers(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr string
	}{
		{"127.0.0.1:7070", []string{"127.0.0.1:7070"}, ""},
		{"a:7070, b:7070", []string{"a:7070", "b:7070"}, ""},
		{"dns:///tether.example.com:7070", []string{"dns:///tether.example.com:7070"}, ""},
		{"[::1]:7070,unix:///run/tether.sock", []string{"[::1]:7070", "unix:///run/tether.sock"}, ""},
		{"http://127.0.0.1:7070", nil, `server address "http://127.0.0.1:7070": give host:port without http://`},
		{"127.0.0.1", nil, `server address "127.0.0.1": missing port (e.g. 127.0.0.1:7070)`},
		{"dns:///tether.example.com", nil, `server address "dns:///tether.example.com": missing port`},
		{"a:http", nil, `port "http" is not a number`},
		{"::1:7070", nil, "IPv6 address goes in brackets"},
		{" , ", nil, "no server address"},
		{"ftp://x:1", nil, `unknown scheme "ftp"`},
	} {
		got, err := ParseServers(tc.in)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("ParseServers(%q) err = %v, want it to contain %q", tc.in, err, tc.wantErr)
		case tc.wantErr == "" && (err != nil || strings.Join(got, "|") != strings.Join(tc.want, "|")):
			t.Errorf("ParseServers(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestAgentMovesToTheNextServerWhenOneDrains(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgentOn(t, Config{DeviceID: "d1"}, "a", "b")
		c := h.connOn("a")
		c.ack(1)
		c.close(draining, time.Minute) // the hint is about a, not b
		start := time.Now()
		c = h.connOn("b")
		if waited := time.Since(start); waited >= time.Minute {
			t.Fatalf("waited %v for the next server: the draining server's retry_after was applied to it", waited)
		}
		c.ack(2)
		c.close(draining, 0)
		h.connOn("a").ack(3) // and round again
	})
}

func TestAgentMovesToTheNextServerWhenOneIsDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgentOn(t, Config{DeviceID: "d1"}, "a", "b")
		c := h.connOn("a")
		c.ack(1)
		h.lis["a"].Close() // new connections to a fail from now on
		c.finish(nil)
		h.connOn("b").ack(2)
	})
}

func TestAgentStaysOnItsServerWhenReplaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgentOn(t, Config{DeviceID: "d1"}, "a", "b")
		c := h.connOn("a")
		c.ack(1)
		c.close(replaced, 0)
		h.connOn("a").ack(2)
	})
}
