package redisstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/internal/testredis"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/registry/redisstore"
)

// TestLeaseWritesNeverWaitBehindReads saturates the read and blocking-read
// pools (one connection each) with API reads and XREAD BLOCKs, and checks
// that claims and node renewals meanwhile get a connection of their own
// pool at once: the lease pool records no wait, the others do.
func TestLeaseWritesNeverWaitBehindReads(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	s, err := redisstore.New(ctx, redisstore.Options{URL: srv.URL(), KeyPrefix: "pools", Pools: redisstore.PoolSizes{Lease: 4, Read: 1, Block: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(2)
		go func() { // blocking reads: each holds the one block connection up to 1s
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				_, _ = s.ReadEvents(rctx, "", 10, time.Second)
				cancel()
			}
		}()
		go func() { // API reads on the one read connection
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = s.List(ctx, registry.ListQuery{Limit: 100})
			}
		}()
	}
	// Let the readers pile up on their pools.
	for s.PoolStats()["block"].WaitCount == 0 || s.PoolStats()["read"].WaitCount == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	for i := range 50 {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := s.KeepNodeAlive(wctx, "n1", "addr", 15*time.Second); err != nil {
			t.Fatalf("renewal %d: %v", i, err)
		}
		if _, err := s.Claim(wctx, registry.ClaimRequest{DeviceID: "d1", Node: "n1", Mode: tetherv1.LivenessMode_LIVENESS_MODE_APP_PONG, Now: time.Now()}); err != nil {
			t.Fatalf("claim %d: %v", i, err)
		}
		cancel()
	}
	close(stop)
	wg.Wait()
	st := s.PoolStats()
	if st["lease"].WaitCount != 0 || st["lease"].Timeouts != 0 {
		t.Fatalf("lease pool waited %d times (%d timeouts) while the read pools were saturated", st["lease"].WaitCount, st["lease"].Timeouts)
	}
	t.Logf("waits: lease %d, read %d, block %d", st["lease"].WaitCount, st["read"].WaitCount, st["block"].WaitCount)
}
