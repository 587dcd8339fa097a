package main

import (
	"testing"
	"time"
)

func TestEventTimeReadsOnlyFeedEvents(t *testing.T) {
	heartbeat := `{"result":{"event":{"eventId":"","type":"EVENT_TYPE_HEARTBEAT","deviceId":"","leaseId":"0","reason":"DISCONNECT_REASON_UNSPECIFIED","time":"2026-12-02T02:45:42.751060711Z","node":""}}}`
	online := `{"result":{"event":{"eventId":"1796179541234164238-1","type":"EVENT_TYPE_ONLINE","deviceId":"churn-12","leaseId":"1796179544684612","reason":"DISCONNECT_REASON_UNSPECIFIED","time":"2026-12-02T02:45:44.684591397Z","node":"bench-1"}}}`
	if _, ok := eventTime([]byte(heartbeat)); ok {
		t.Fatal("a heartbeat was taken for an event")
	}
	at, ok := eventTime([]byte(online))
	if want := time.Date(2026, 12, 2, 2, 45, 44, 684591397, time.UTC); !ok || !at.Equal(want) {
		t.Fatalf("eventTime = %v, %v; want %v", at, ok, want)
	}
	for _, bad := range []string{``, `{"eventId":"`, `{"eventId":"1","time":"`, `{"eventId":"1","time":"yesterday"}`} {
		if _, ok := eventTime([]byte(bad)); ok {
			t.Fatalf("eventTime(%q) ok", bad)
		}
	}
}
