package logging

import (
	"bytes"
	"encoding/json"
	"testing"
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
