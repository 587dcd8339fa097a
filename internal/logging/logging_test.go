package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

func TestJSONLogsAreJSONAndLevelsFilter(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, "json", "warn")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown", "device", "d1")
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("not one JSON line: %q", buf.String())
	}
	if m["msg"] != "shown" || m["device"] != "d1" {
		t.Fatalf("got %v", m)
	}
}

func TestBadFlagsAreRejected(t *testing.T) {
	if _, err := New(nil, "xml", "info"); err == nil {
		t.Error("format xml accepted")
	}
	if _, err := New(nil, "text", "loud"); err == nil {
		t.Error("level loud accepted")
	}
}

func TestJSONDurationsAreStrings(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("x", "retry_in", 1500*time.Millisecond, slog.Group("config", "ping_interval", 10*time.Second))
	var m struct {
		RetryIn string `json:"retry_in"`
		Config  struct {
			PingInterval string `json:"ping_interval"`
		} `json:"config"`
	}
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("%v: %q", err, buf.String())
	}
	if m.RetryIn != "1.5s" || m.Config.PingInterval != "10s" {
		t.Fatalf("got %+v from %s", m, buf.String())
	}
}

func TestOneVocabularyForReasonsAndModes(t *testing.T) {
	for r, want := range map[tetherv1.DisconnectReason]string{
		tetherv1.DisconnectReason_DISCONNECT_REASON_CLIENT_CLOSED: "client_closed",
		tetherv1.DisconnectReason_DISCONNECT_REASON_DRAINING:      "draining",
		tetherv1.DisconnectReason(999):                            "unknown",
	} {
		if got := Reason(r); got != want {
			t.Errorf("Reason(%v) = %q, want %q", r, got, want)
		}
	}
	if got := Mode(tetherv1.LivenessMode_LIVENESS_MODE_TRANSPORT_ONLY); got != "transport_only" {
		t.Errorf("Mode = %q", got)
	}
}
