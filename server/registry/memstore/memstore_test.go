package memstore_test

import (
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/registry/memstore"
	"github.com/tetherhq/tether/server/registry/storetest"
)

// harness runs every contract test inside a synctest bubble: node TTLs,
// retention and ReadEvents waits use the bubble's fake clock.
func harness() storetest.Harness {
	return storetest.Harness{
		New: func(t *testing.T, opts storetest.Options) registry.Store {
			st := memstore.New(memstore.Options{EventRetention: opts.EventRetention, DeviceRetention: opts.DeviceRetention})
			t.Cleanup(func() { _ = st.Close() })
			return st
		},
		Flush: func(t *testing.T, st registry.Store) registry.Store {
			// A process restart: everything is lost, and restarting takes
			// time (the fake clock would otherwise stand still).
			_ = st.Close()
			time.Sleep(time.Second)
			st = memstore.New(memstore.Options{})
			t.Cleanup(func() { _ = st.Close() })
			return st
		},
		Wrap: func(t *testing.T, body func(t *testing.T)) { synctest.Test(t, body) },
	}
}

func TestContract(t *testing.T) { storetest.Run(t, harness()) }

// The suite also passes on the real clock.
func TestContractRealClock(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	h := harness()
	h.Wrap = nil
	h.Flush = nil // a real-clock restart needs real time to pass
	storetest.Run(t, h)
}

func TestNodeLapsesAfterItsTTLWithoutRenewal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New(memstore.Options{})
		ctx := t.Context()
		const ttl = 15 * time.Second
		if err := st.KeepNodeAlive(ctx, "n1", "10.0.0.1:7001", ttl); err != nil {
			t.Fatal(err)
		}
		c, err := st.Claim(ctx, registry.ClaimRequest{DeviceID: "dev", Node: "n1", Now: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		// Renewed every 5 s for a minute: the session stays online.
		for range 12 {
			time.Sleep(5 * time.Second)
			if err := st.KeepNodeAlive(ctx, "n1", "10.0.0.1:7001", ttl); err != nil {
				t.Fatal(err)
			}
			if r, _ := st.Get(ctx, "dev"); !r.Online() {
				t.Fatalf("offline at %v while renewed", time.Now())
			}
		}
		time.Sleep(ttl - time.Nanosecond)
		if r, _ := st.Get(ctx, "dev"); !r.Online() {
			t.Fatal("offline before the TTL ran out")
		}
		time.Sleep(time.Nanosecond)
		r, err := st.Get(ctx, "dev")
		if err != nil || r.Online() || r.LastDisconnect == nil || r.LastDisconnect.Reason != nodeLost || r.LastDisconnect.Lease != c.Lease {
			t.Fatalf("at the TTL: %+v, %v; want offline NODE_LOST", r, err)
		}
		if _, err := st.NodeAddr(ctx, "n1"); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("NodeAddr after lapse: %v", err)
		}
	})
}

func TestRetentionCountsFromTheLastWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const keep = 7 * 24 * time.Hour
		st := memstore.New(memstore.Options{})
		ctx := t.Context()
		c, err := st.Claim(ctx, registry.ClaimRequest{DeviceID: "dev", Node: "n1", Now: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(keep - time.Hour)
		if err := st.Release(ctx, "dev", registry.Disconnect{Lease: c.Lease, Time: time.Now()}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(keep - time.Second)
		if _, err := st.Get(ctx, "dev"); err != nil {
			t.Fatalf("expired before the retention counted from the release: %v", err)
		}
		time.Sleep(time.Second)
		if _, err := st.Get(ctx, "dev"); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("kept past the retention: %v", err)
		}
		if page, err := st.List(ctx, registry.ListQuery{}); err != nil || len(page.Records) != 0 {
			t.Fatalf("List lists an expired device: %v, %v", page.Records, err)
		}
	})
}

func TestClosedStoreIsUnavailableAndWakesReaders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New(memstore.Options{})
		done := make(chan error)
		go func() {
			_, err := st.ReadEvents(t.Context(), "", 10, time.Hour)
			done <- err
		}()
		synctest.Wait()
		_ = st.Close()
		if err := <-done; !errors.Is(err, registry.ErrUnavailable) {
			t.Fatalf("waiting reader after Close: %v", err)
		}
		if _, err := st.Get(t.Context(), "x"); !errors.Is(err, registry.ErrUnavailable) {
			t.Fatalf("Get after Close: %v", err)
		}
	})
}

func TestListPagesThroughManyDevicesFromTheMiddle(t *testing.T) {
	st := memstore.New(memstore.Options{})
	ctx := t.Context()
	live := make([]registry.Live, 100_000)
	for i := range live {
		live[i] = registry.Live{DeviceID: deviceID(i), Lease: 1, Node: "n1"}
	}
	if _, err := st.Remirror(ctx, live); err != nil {
		t.Fatal(err)
	}
	page, err := st.List(ctx, registry.ListQuery{After: deviceID(99_000), Limit: 10})
	if err != nil || len(page.Records) != 10 || page.Records[0].DeviceID != deviceID(99_001) {
		t.Fatalf("List = %d records, %v", len(page.Records), err)
	}
}

func deviceID(i int) string { return fmt.Sprintf("dev-%06d", i) }

const nodeLost = tetherv1.DisconnectReason_DISCONNECT_REASON_NODE_LOST

func TestFleetContract(t *testing.T) {
	storetest.RunFleet(t, storetest.Harness{
		New: func(t *testing.T, opts storetest.Options) registry.Store {
			st := memstore.New(memstore.Options{EventRetention: opts.EventRetention, DeviceRetention: opts.DeviceRetention,
				HistoryLen: opts.HistoryLen, HistoryRetention: opts.HistoryRetention, NeverConnectedRetention: opts.NeverConnectedRetention})
			t.Cleanup(func() { _ = st.Close() })
			return st
		},
		Wrap: func(t *testing.T, body func(t *testing.T)) { synctest.Test(t, body) },
	})
}
