package redisstore_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tetherhq/tether/internal/testredis"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/registry/storetest"
)

// TestFleetContract runs the fleet views' contract against a real
// redis-server, one key prefix per store.
func TestFleetContract(t *testing.T) {
	srv := testredis.Start(t)
	storetest.RunFleet(t, storetest.Harness{
		New: func(t *testing.T, opts storetest.Options) registry.Store {
			return open(t, srv.URL(), fmt.Sprintf("f%d", prefixes.Add(1)), opts)
		},
	})
}

// BenchmarkInventory100k counts 100,000 devices (half online on 4 live
// nodes, one dead node, 5 agent versions, 3 OSes, 50 sites) with one
// Inventory call: the bounded scan of the device index. The records are
// written straight into the documented layout (docs/REDIS.md), which is much
// faster than 100,000 claims.
func BenchmarkInventory100k(b *testing.B) {
	const n = 100_000
	srv := testredis.Start(b)
	st := open(b, srv.URL(), "inv", storetest.Options{})
	ctx := b.Context()
	rdb := srv.Client()
	for _, node := range []string{"n0", "n1", "n2", "n3"} {
		if err := st.KeepNodeAlive(ctx, node, node+":7001", time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	for start := 0; start < n; start += 1000 {
		pipe := rdb.Pipeline()
		var ids []redis.Z
		for i := start; i < start+1000; i++ {
			id := fmt.Sprintf("dev-%06d", i)
			ids = append(ids, redis.Z{Member: id})
			info := fmt.Sprintf(`{"hostname":"%s","os":"linux (os %d)","arch":"amd64","agent_version":"1.%d.0","labels":{"site":"s%02d","role":"kiosk"},"boot_id":"b-%d"}`,
				id, i%3, i%5, i%50, i)
			f := []any{"id", id, "lease", fmt.Sprint(1_800_000_000_000_000 + i), "first_seen", now, "info", info, "boot_id", fmt.Sprint("b-", i)}
			if i%2 == 0 {
				f = append(f, "s_lease", fmt.Sprint(1_800_000_000_000_000+i), "s_node", fmt.Sprint("n", i%5), "s_connected", now, "s_last_seen", now)
			}
			pipe.HSet(ctx, "inv:{d:"+id+"}", f...)
		}
		pipe.ZAdd(ctx, "inv:devices", ids...)
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		inv, err := st.Inventory(ctx, "site")
		if err != nil {
			b.Fatal(err)
		}
		// n4 has no liveness key: its sessions read offline.
		if inv.Total != n || inv.Online != n/2-n/10 || len(inv.ByLabel) != 50 || len(inv.ByNode) != 4 {
			b.Fatalf("inventory: total %d online %d sites %d nodes %v", inv.Total, inv.Online, len(inv.ByLabel), inv.ByNode)
		}
	}
}

// TestHistoryBudget measures the Redis memory of a full history (the
// default 20 entries, with the longest node names and messages the server
// writes) and holds it to the budget documented in docs/REDIS.md.
func TestHistoryBudget(t *testing.T) {
	const budget = 12 << 10
	srv := testredis.Start(t)
	st := open(t, srv.URL(), "hb", storetest.Options{})
	ctx := t.Context()
	node := "tether-server-replica-01.example.internal-7070"
	if err := st.KeepNodeAlive(ctx, node, "10.0.0.1:7071", time.Hour); err != nil {
		t.Fatal(err)
	}
	for i := range registry.DefaultHistoryLen + 5 {
		c, err := st.Claim(ctx, registry.ClaimRequest{DeviceID: "aa-bb-cc-dd-ee-ff", Node: node, Now: time.Now(), ClaimID: fmt.Sprint("c", i)})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Release(ctx, "aa-bb-cc-dd-ee-ff", registry.Disconnect{Lease: c.Lease, Reason: 2, Time: time.Now(),
			Message: "no Pong within the ping timeout (5s) after Ping 1234; the session is ended and the agent will reconnect"}); err != nil {
			t.Fatal(err)
		}
	}
	key := "hb:{d:aa-bb-cc-dd-ee-ff}:h"
	n, err := srv.Client().LLen(ctx, key).Result()
	if err != nil || n != registry.DefaultHistoryLen {
		t.Fatalf("LLEN = %d, %v; want %d", n, err, registry.DefaultHistoryLen)
	}
	used, err := srv.Client().MemoryUsage(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("MEMORY USAGE of a full history (%d entries): %d bytes", n, used)
	if used > budget {
		t.Fatalf("a full history takes %d bytes, over the %d-byte budget", used, budget)
	}
}

// TestFleetContractOnACluster: the history list shares the device hash's
// hash tag, so the scripts that end sessions stay in one slot on a Redis
// Cluster; the inventory and node reads span slots through the Cluster
// client.
func TestFleetContractOnACluster(t *testing.T) {
	c := testredis.StartCluster(t, 3)
	storetest.RunFleet(t, storetest.Harness{
		New: func(t *testing.T, opts storetest.Options) registry.Store {
			return open(t, c.SeedURL(), fmt.Sprintf("fc%d", prefixes.Add(1)), opts)
		},
	})
}
