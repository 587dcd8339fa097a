package audit

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/internal/testredis"
)

func TestAuditLinesGoToTheRedisStreamWithRetention(t *testing.T) {
	rds := testredis.Start(t)
	rdb := rds.Client()
	ctx := context.Background()
	// An entry far older than the retention: the next write trims it.
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "k", ID: "1-0", Values: []any{"msg", "old"}}).Err(); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	sink, err := NewStreamSink(rds.URL(), "k", time.Hour, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := New(slog.New(slog.NewJSONHandler(&buf, nil)), nil).WithStream(sink)
	cctx := WithCaller(context.Background(), Caller{Kind: "key", Name: "ops"})
	l.Call(cctx, "send_command", &tetherv1.SendCommandRequest{DeviceId: "d1", Name: "reboot", Args: []string{"now"}}, nil, time.Millisecond)
	l.Refused(context.Background(), "bad_api_key", "/tether.v1.DeviceService/SendCommand", status.Error(codes.Unauthenticated, "unknown API key"))
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	msgs, err := rdb.XRange(ctx, "k", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 {
		t.Fatalf("stream has %d entries, want 2 (the old one trimmed): %v", len(msgs), msgs)
	}
	a, r := msgs[0].Values, msgs[1].Values
	if a["msg"] != "audit" || a["caller"] != "key:ops" || a["device"] != "d1" || a["command"] != "reboot" ||
		a["args_sha256"] != ArgsDigest([]string{"now"}) || a["code"] != "OK" || a["time"] == nil {
		t.Errorf("audit entry = %v", a)
	}
	if r["msg"] != "auth refused" || r["reason"] != "bad_api_key" || r["err"] != "unknown API key" {
		t.Errorf("refusal entry = %v", r)
	}
	if _, err := NewStreamSink(rds.URL(), "k", 0, nil, nil); err == nil {
		t.Error("zero retention accepted")
	}
	if _, err := NewStreamSink("http://x", "k", time.Hour, nil, nil); err == nil {
		t.Error("a non-redis URL accepted")
	}
}

// The digest docs/ADMIN.md shows for the arguments ["hello", "admin"].
func TestArgsDigestMatchesTheDocumentedExample(t *testing.T) {
	if got := ArgsDigest([]string{"hello", "admin"}); got != "2d60037a46d70d38" {
		t.Fatalf("ArgsDigest = %s; update docs/ADMIN.md", got)
	}
	if ArgsDigest([]string{"ab", "c"}) == ArgsDigest([]string{"a", "bc"}) {
		t.Fatal("argument boundaries do not change the digest")
	}
}
