package testredis_test

import (
	"context"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/testredis"
)

func TestServerAnswersAndLosesDataOnRestart(t *testing.T) {
	srv := testredis.Start(t)
	c := srv.Client()
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Restart()
	if n, err := c.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Fatalf("after restart: exists = %d, %v; want the key gone", n, err)
	}
	if srv.URL() != "redis://"+srv.Addr() {
		t.Fatalf("URL %q does not match Addr %q", srv.URL(), srv.Addr())
	}
}

func TestFrozenServerDoesNotAnswerUntilThawed(t *testing.T) {
	srv := testredis.Start(t)
	c := srv.Client()
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Freeze()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("a frozen server answered PING")
	}
	srv.Thaw()
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Fatalf("after thaw: %v", err)
	}
}

func TestStoppedServerRefusesConnections(t *testing.T) {
	srv := testredis.Start(t)
	c := srv.Client()
	srv.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("a stopped server answered PING")
	}
	srv.Stop() // idempotent
}
