package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/internal/testredis"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/registry/redisstore"
	"github.com/tetherhq/tether/server/registry/storetest"
)

var prefixes atomic.Int64

func open(t testing.TB, url, prefix string, opts storetest.Options) *redisstore.Store {
	t.Helper()
	st, err := redisstore.New(t.Context(), redisstore.Options{
		URL:                     url,
		KeyPrefix:               prefix,
		EventMaxLen:             int64(opts.EventRetention),
		DeviceRetention:         opts.DeviceRetention,
		HistoryLen:              opts.HistoryLen,
		HistoryRetention:        opts.HistoryRetention,
		NeverConnectedRetention: opts.NeverConnectedRetention,
		Logger:                  slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if err != nil {
		t.Fatalf("redisstore.New: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// TestContract runs the suite against one redis-server; every store gets a
// key prefix of its own, so tests do not see each other's keys.
func TestContract(t *testing.T) {
	srv := testredis.Start(t)
	var mu sync.Mutex
	prefixOf := map[registry.Store]string{}
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T, opts storetest.Options) registry.Store {
			p := fmt.Sprintf("t%d", prefixes.Add(1))
			st := open(t, srv.URL(), p, opts)
			mu.Lock()
			prefixOf[st] = p
			mu.Unlock()
			return st
		},
		Flush: func(t *testing.T, st registry.Store) registry.Store {
			if err := srv.Client().FlushAll(t.Context()).Err(); err != nil {
				t.Fatal(err)
			}
			return st
		},
		Replica: func(t *testing.T, st registry.Store) registry.Store {
			mu.Lock()
			p := prefixOf[st]
			mu.Unlock()
			return open(t, srv.URL(), p, storetest.Options{})
		},
	})
}

func claim(t *testing.T, st *redisstore.Store, id, node string, minLease uint64) registry.Claimed {
	t.Helper()
	c, err := st.Claim(t.Context(), registry.ClaimRequest{DeviceID: id, Node: node, Now: time.Now(), MinLease: minLease,
		Info: &tetherv1.DeviceInfo{Hostname: "h", BootId: "b1", Labels: map[string]string{"site": "x"}}})
	if err != nil {
		t.Fatalf("Claim(%s): %v", id, err)
	}
	return c
}

func TestScriptsRunAgainAfterRedisRestartsWithAnEmptyScriptCache(t *testing.T) {
	srv := testredis.Start(t)
	st := open(t, srv.URL(), "tether", storetest.Options{})
	ctx := t.Context()
	if err := st.KeepNodeAlive(ctx, "n1", "a:1", time.Hour); err != nil {
		t.Fatal(err)
	}
	c := claim(t, st, "dev", "n1", 0)

	srv.Restart() // data and script cache gone: EVALSHA answers NOSCRIPT
	// A pipelined batch (Touch) reloads the script and retries.
	res, err := st.Touch(ctx, []registry.Touch{{DeviceID: "dev", Lease: c.Lease, LastSeen: time.Now()}})
	if err != nil || len(res.Missing) != 1 || len(res.Stale)+len(res.Unknown) != 0 {
		t.Fatalf("Touch after restart = %+v, %v; want it missing (data lost), no error", res, err)
	}
	// Re-mirroring (also a pipelined batch) restores the session.
	if err := st.KeepNodeAlive(ctx, "n1", "a:1", time.Hour); err != nil {
		t.Fatal(err)
	}
	if res, err := st.Remirror(ctx, []registry.Live{{DeviceID: "dev", Lease: c.Lease, Node: "n1", ConnectedAt: time.Now()}}); err != nil || len(res.Stale)+len(res.Unknown) != 0 {
		t.Fatalf("Remirror after restart = %+v, %v", res, err)
	}

	srv.Restart()
	if err := st.KeepNodeAlive(ctx, "n1", "a:1", time.Hour); err != nil {
		t.Fatal(err)
	}
	// A single call (Claim's script.Run) falls back to EVAL.
	c2 := claim(t, st, "dev", "n1", c.Lease)
	if c2.Lease <= c.Lease {
		t.Fatalf("lease %d after restart <= %d", c2.Lease, c.Lease)
	}
	for _, op := range []func() error{
		func() error { return st.UpdateInfo(ctx, "dev", c2.Lease, &tetherv1.DeviceInfo{Hostname: "x"}) },
		func() error {
			return st.Release(ctx, "dev", registry.Disconnect{Lease: c2.Lease, Reason: tetherv1.DisconnectReason_DISCONNECT_REASON_CLIENT_CLOSED, Time: time.Now()})
		},
	} {
		srv.Client().ScriptFlush(ctx)
		if err := op(); err != nil {
			t.Fatalf("after SCRIPT FLUSH: %v", err)
		}
	}
	info, err := srv.Client().Info(ctx, "errorstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info, "errorstat_NOSCRIPT") {
		t.Fatalf("the NOSCRIPT path was never taken:\n%s", info)
	}
}

func TestClaimAfterFlushAllStaysAboveALiveLease(t *testing.T) {
	srv := testredis.Start(t)
	st := open(t, srv.URL(), "tether", storetest.Options{})
	live := claim(t, st, "dev", "n1", 0).Lease
	if err := srv.Client().FlushAll(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	// MinLease 0: the caller knows of no local session, Redis knows of no
	// lease; TIME alone keeps the new lease above the one still live.
	if c := claim(t, st, "dev", "n2", 0); c.Lease <= live || c.Replaced != nil {
		t.Fatalf("claim after FLUSHALL: %+v; want a lease above %d", c, live)
	}
}

func TestRemirrorAfterFlushAllRestoresHashIndexAndLease(t *testing.T) {
	srv := testredis.Start(t)
	st := open(t, srv.URL(), "tether", storetest.Options{})
	ctx := t.Context()
	if err := st.KeepNodeAlive(ctx, "n1", "a:1", time.Hour); err != nil {
		t.Fatal(err)
	}
	c := claim(t, st, "dev", "n1", 0)
	rdb := srv.Client()
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := st.KeepNodeAlive(ctx, "n1", "a:1", time.Hour); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	if stale, err := st.Remirror(ctx, []registry.Live{{DeviceID: "dev", Lease: c.Lease, Node: "n1", ConnectedAt: at, LastSeen: at,
		Info: &tetherv1.DeviceInfo{BootId: "b1"}}}); err != nil || len(stale.Stale)+len(stale.Unknown) != 0 {
		t.Fatalf("Remirror = %+v, %v", stale, err)
	}
	h := rdb.HGetAll(ctx, "tether:{d:dev}").Val()
	if h["lease"] != strconv.FormatUint(c.Lease, 10) || h["s_lease"] != h["lease"] || h["s_node"] != "n1" || h["boot_id"] != "b1" {
		t.Fatalf("re-mirrored hash = %v", h)
	}
	if score, err := rdb.ZScore(ctx, "tether:devices", "dev").Result(); err != nil || score != 0 {
		t.Fatalf("index entry: %v, %v", score, err)
	}
	if ttl := rdb.PTTL(ctx, "tether:{d:dev}").Val(); ttl <= 0 {
		t.Fatalf("re-mirrored hash has no retention TTL: %v", ttl)
	}
}

// TestKeyLayoutMatchesTheDocs pins what docs/REDIS.md promises readers.
func TestKeyLayoutMatchesTheDocs(t *testing.T) {
	srv := testredis.Start(t)
	st := open(t, srv.URL(), "fleet", storetest.Options{DeviceRetention: time.Hour})
	ctx := t.Context()
	rdb := srv.Client()
	if err := st.KeepNodeAlive(ctx, "node-1", "10.0.0.1:7001", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 5, 4, 3, 2, 1, 123456789, time.UTC)
	c, err := st.Claim(ctx, registry.ClaimRequest{DeviceID: "aa-bb", Node: "node-1", RemoteAddr: "192.0.2.1:4000",
		Mode: tetherv1.LivenessMode_LIVENESS_MODE_APP_PONG, Now: now, Info: &tetherv1.DeviceInfo{Hostname: "box", BootId: "boot-9", Labels: map[string]string{"site": "b"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Touch(ctx, []registry.Touch{{DeviceID: "aa-bb", Lease: c.Lease, LastSeen: now.Add(time.Minute), RTT: 1500 * time.Microsecond}}); err != nil {
		t.Fatal(err)
	}
	h := rdb.HGetAll(ctx, "fleet:{d:aa-bb}").Val()
	lease := strconv.FormatUint(c.Lease, 10)
	want := map[string]string{
		"id": "aa-bb", "lease": lease, "first_seen": "2026-05-04T03:02:01.123456789Z", "boot_id": "boot-9",
		"s_lease": lease, "s_node": "node-1", "s_remote": "192.0.2.1:4000", "s_mode": "LIVENESS_MODE_APP_PONG",
		"s_connected": "2026-05-04T03:02:01.123456789Z", "s_last_seen": "2026-05-04T03:03:01.123456789Z", "s_rtt_ns": "1500000",
	}
	for k, v := range want {
		if h[k] != v {
			t.Errorf("field %s = %q; want %q", k, h[k], v)
		}
	}
	if !strings.Contains(h["info"], `"hostname":"box"`) || !strings.Contains(h["info"], `"boot_id":"boot-9"`) {
		t.Errorf("info = %s; want proto JSON with proto field names", h["info"])
	}
	if ttl := rdb.PTTL(ctx, "fleet:{d:aa-bb}").Val(); ttl <= 0 || ttl > time.Hour {
		t.Errorf("device hash PTTL = %v; want the retention", ttl)
	}
	if v, ttl := rdb.Get(ctx, "fleet:node:node-1").Val(), rdb.PTTL(ctx, "fleet:node:node-1").Val(); v != "10.0.0.1:7001" || ttl <= 0 || ttl > 15*time.Second {
		t.Errorf("node key = %q PTTL %v", v, ttl)
	}
	if z := rdb.ZRangeWithScores(ctx, "fleet:devices", 0, -1).Val(); len(z) != 1 || z[0].Member != "aa-bb" || z[0].Score != 0 {
		t.Errorf("index = %v", z)
	}
	if z := rdb.ZRangeWithScores(ctx, "fleet:node:node-1:sessions", 0, -1).Val(); len(z) != 1 || z[0].Member != "aa-bb" || uint64(z[0].Score) != c.Lease {
		t.Errorf("node session index = %v; want aa-bb scored by lease %d", z, c.Lease)
	}
	if err := st.Release(ctx, "aa-bb", registry.Disconnect{Lease: c.Lease, Reason: tetherv1.DisconnectReason_DISCONNECT_REASON_PING_TIMEOUT, Time: now.Add(2 * time.Minute), Message: "m"}); err != nil {
		t.Fatal(err)
	}
	if z := rdb.ZRange(ctx, "fleet:node:node-1:sessions", 0, -1).Val(); len(z) != 0 {
		t.Errorf("node session index after release = %v; want empty", z)
	}
	h = rdb.HGetAll(ctx, "fleet:{d:aa-bb}").Val()
	if _, ok := h["s_lease"]; ok {
		t.Errorf("released hash still has s_lease: %v", h)
	}
	if h["d_lease"] != lease || h["d_reason"] != "DISCONNECT_REASON_PING_TIMEOUT" || h["d_node"] != "node-1" || h["d_time"] != "2026-05-04T03:04:01.123456789Z" ||
		h["d_message"] != "m" || h["d_restart"] != "DEVICE_RESTART_UNSPECIFIED" {
		t.Errorf("released hash = %v", h)
	}
	msgs := rdb.XRange(ctx, "fleet:events", "-", "+").Val()
	if len(msgs) != 2 {
		t.Fatalf("stream entries = %v", msgs)
	}
	off := msgs[1].Values
	if off["type"] != "EVENT_TYPE_OFFLINE" || off["device"] != "aa-bb" || off["lease"] != lease || off["reason"] != "DISCONNECT_REASON_PING_TIMEOUT" ||
		off["node"] != "node-1" || off["time"] != "2026-05-04T03:04:01.123456789Z" {
		t.Errorf("OFFLINE entry = %v", off)
	}
	if on := msgs[0].Values; on["type"] != "EVENT_TYPE_ONLINE" || on["reason"] != "DISCONNECT_REASON_UNSPECIFIED" {
		t.Errorf("ONLINE entry = %v", on)
	}
}

// commandCalls returns calls per command from INFO commandstats.
func commandCalls(t *testing.T, rdb *redis.Client) map[string]int {
	t.Helper()
	info, err := rdb.Info(t.Context(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		n, _ := strconv.Atoi(strings.SplitN(rest, ",", 2)[0])
		out[strings.TrimPrefix(name, "cmdstat_")] = n
	}
	return out
}

func TestTouchOfNDevicesIsNScriptCallsInOnePipeline(t *testing.T) {
	srv := testredis.Start(t)
	st := open(t, srv.URL(), "tether", storetest.Options{})
	ctx := t.Context()
	const n = 200
	touches := make([]registry.Touch, n)
	for i := range touches {
		id := fmt.Sprintf("dev-%03d", i)
		touches[i] = registry.Touch{DeviceID: id, Lease: claim(t, st, id, "n1", 0).Lease, LastSeen: time.Now(), RTT: time.Millisecond}
	}
	touches = append(touches, registry.Touch{DeviceID: "dev-000", Lease: 1}) // stale
	rdb := srv.Client()
	if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	hook := &countHook{}
	st.Client().AddHook(hook)
	res, err := st.Touch(ctx, touches)
	if err != nil || len(res.Stale) != 1 || res.Stale[0].Lease != 1 || len(res.Missing)+len(res.Unknown) != 0 {
		t.Fatalf("Touch = %+v, %v; want one stale", res, err)
	}
	if hook.pipelines != 1 || len(hook.single) != 0 || len(hook.piped) != n+1 {
		t.Fatalf("Touch of %d sent %d pipelines (%d commands) and %d single commands %v; want one pipeline of %d", n+1, hook.pipelines, len(hook.piped), len(hook.single), hook.single, n+1)
	}
	for _, name := range hook.piped {
		if name != "evalsha" {
			t.Fatalf("pipeline holds %q; want only evalsha", name)
		}
	}
	// Redis agrees (commands run inside the scripts are counted apart).
	if calls := commandCalls(t, rdb); calls["evalsha"] != n+1 || calls["eval"] != 0 {
		t.Fatalf("server-side command stats: %v; want %d EVALSHA", calls, n+1)
	}
}

// countHook records the commands a client sends.
type countHook struct {
	mu        sync.Mutex
	pipelines int
	piped     []string
	single    []string
}

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.mu.Lock()
		h.single = append(h.single, cmd.Name())
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.mu.Lock()
		h.pipelines++
		for _, c := range cmds {
			h.piped = append(h.piped, c.Name())
		}
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

func TestListReadsABoundedPartOfTheIndexPerCall(t *testing.T) {
	srv := testredis.Start(t)
	st := open(t, srv.URL(), "tether", storetest.Options{})
	ctx := t.Context()
	const n = 3000
	live := make([]registry.Live, n)
	for i := range live {
		live[i] = registry.Live{DeviceID: fmt.Sprintf("dev-%05d", i), Lease: 1, Node: "n1"}
	}
	if _, err := st.Remirror(ctx, live); err != nil {
		t.Fatal(err)
	}
	rdb := srv.Client()
	if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	// Nothing matches: one call reads at most 10 × limit index entries and
	// returns where to continue.
	page, err := st.List(ctx, registry.ListQuery{Limit: 20, Labels: map[string]string{"site": "nowhere"}})
	if err != nil || len(page.Records) != 0 || page.Next != "dev-00199" {
		t.Fatalf("List = %d records, next %q, %v; want none, next dev-00199", len(page.Records), page.Next, err)
	}
	if calls := commandCalls(t, rdb); calls["hgetall"] != 200 || calls["keys"] != 0 || calls["scan"] != 0 {
		t.Fatalf("commands of one filtered List: %v; want 200 HGETALL, no KEYS/SCAN", calls)
	}
	// Paging to the end still visits everything, in bounded steps.
	var calls int
	q := registry.ListQuery{Limit: 20, Labels: map[string]string{"site": "nowhere"}}
	for {
		page, err := st.List(ctx, q)
		if err != nil || len(page.Records) != 0 {
			t.Fatal(page, err)
		}
		calls++
		if page.Next == "" {
			break
		}
		q.After = page.Next
	}
	if calls != n/200+1 && calls != n/200 {
		t.Fatalf("%d calls to page through %d non-matching devices", calls, n)
	}
}

func TestExpiredHashesLeaveTheIndexDuringList(t *testing.T) {
	srv := testredis.Start(t)
	st := open(t, srv.URL(), "tether", storetest.Options{DeviceRetention: 100 * time.Millisecond})
	ctx := t.Context()
	claim(t, st, "dev", "n1", 0)
	rdb := srv.Client()
	deadline := time.Now().Add(10 * time.Second)
	for rdb.Exists(ctx, "tether:{d:dev}").Val() == 1 {
		if time.Now().After(deadline) {
			t.Fatal("device hash never expired")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if rdb.ZCard(ctx, "tether:devices").Val() != 1 {
		t.Fatal("index entry should outlive the hash until a List")
	}
	if page, err := st.List(ctx, registry.ListQuery{}); err != nil || len(page.Records) != 0 {
		t.Fatalf("List = %v, %v", page.Records, err)
	}
	if n := rdb.ZCard(ctx, "tether:devices").Val(); n != 0 {
		t.Fatalf("index still has %d entries after List", n)
	}
}

func TestCorruptDataReadsAsZeroValues(t *testing.T) {
	srv := testredis.Start(t)
	st := open(t, srv.URL(), "tether", storetest.Options{})
	ctx := t.Context()
	rdb := srv.Client()
	rdb.HSet(ctx, "tether:{d:bad}", "lease", "1.8e+15", "s_lease", "xyz", "info", "{{{", "first_seen", "yesterday",
		"d_lease", "7", "d_reason", "NOT_A_REASON", "d_time", "soon", "d_restart", "??")
	rdb.ZAdd(ctx, "tether:devices", redis.Z{Member: "bad"}, redis.Z{Member: "wrongtype"})
	rdb.Set(ctx, "tether:{d:wrongtype}", "a string, not a hash", 0)
	rdb.XAdd(ctx, &redis.XAddArgs{Stream: "tether:events", Values: []any{"type", 42, "lease", "-1", "time", "never"}})

	r, err := st.Get(ctx, "bad")
	if err != nil {
		t.Fatal(err)
	}
	if r.Lease != 0 || r.Session != nil || r.Info != nil || !r.FirstSeen.IsZero() ||
		r.LastDisconnect == nil || r.LastDisconnect.Lease != 7 || r.LastDisconnect.Reason != 0 || !r.LastDisconnect.Time.IsZero() {
		t.Fatalf("corrupt record read as %+v", r)
	}
	if _, err := st.Get(ctx, "wrongtype"); err == nil {
		t.Fatal("Get of a non-hash key succeeded")
	}
	// List skips the unreadable key and keeps it in the index.
	if page, err := st.List(ctx, registry.ListQuery{}); err != nil || len(page.Records) != 1 || page.Records[0].DeviceID != "bad" {
		t.Fatalf("List over corrupt data = %v, %v; want the readable record", page.Records, err)
	}
	if rdb.ZScore(ctx, "tether:devices", "wrongtype").Err() != nil {
		t.Fatal("List dropped an existing (if unreadable) key from the index")
	}
	evs, err := st.ReadEvents(ctx, "", 10, 0)
	if err != nil || len(evs) != 1 || evs[0].Type != 0 || evs[0].Lease != 0 || !evs[0].Time.IsZero() {
		t.Fatalf("corrupt event read as %+v, %v", evs, err)
	}
	// A wrong-type key gets an error reply: the touch's outcome is
	// unknown, which never ends a session.
	if res, err := st.Touch(ctx, []registry.Touch{{DeviceID: "wrongtype", Lease: 1}}); err != nil || len(res.Unknown) != 1 || len(res.Stale)+len(res.Missing) != 0 {
		t.Fatalf("Touch of a wrong-type key = %+v, %v", res, err)
	}
	// A claim over a corrupt hash works: the lease comes from TIME.
	if c := claim(t, st, "bad", "n1", 0); c.Lease < uint64(time.Now().Add(-time.Minute).UnixMicro()) {
		t.Fatalf("claim over corrupt hash: %+v", c)
	}
}

func TestUnreachableRedisIsErrUnavailable(t *testing.T) {
	srv := testredis.Start(t)
	st := open(t, srv.URL()+"?dial_timeout=200ms&read_timeout=200ms&write_timeout=200ms&max_retries=-1", "tether", storetest.Options{})
	c := claim(t, st, "dev", "n1", 0)

	ops := map[string]func(ctx context.Context) error{
		"Ping": st.Ping,
		"Claim": func(ctx context.Context) error {
			_, err := st.Claim(ctx, registry.ClaimRequest{DeviceID: "dev", Node: "n1", Now: time.Now()})
			return err
		},
		"Touch": func(ctx context.Context) error {
			_, err := st.Touch(ctx, []registry.Touch{{DeviceID: "dev", Lease: c.Lease}})
			return err
		},
		"UpdateInfo": func(ctx context.Context) error { return st.UpdateInfo(ctx, "dev", c.Lease, nil) },
		"Release": func(ctx context.Context) error {
			return st.Release(ctx, "dev", registry.Disconnect{Lease: c.Lease})
		},
		"Get": func(ctx context.Context) error { _, err := st.Get(ctx, "dev"); return err },
		"List": func(ctx context.Context) error {
			_, err := st.List(ctx, registry.ListQuery{})
			return err
		},
		"ReadEvents": func(ctx context.Context) error {
			_, err := st.ReadEvents(ctx, "", 10, 0)
			return err
		},
		"LastEventID":   func(ctx context.Context) error { _, err := st.LastEventID(ctx); return err },
		"KeepNodeAlive": func(ctx context.Context) error { return st.KeepNodeAlive(ctx, "n1", "a", time.Second) },
		"NodeAddr":      func(ctx context.Context) error { _, err := st.NodeAddr(ctx, "n1"); return err },
		"DropNode":      func(ctx context.Context) error { return st.DropNode(ctx, "n1") },
		"Remirror": func(ctx context.Context) error {
			_, err := st.Remirror(ctx, []registry.Live{{DeviceID: "dev", Lease: c.Lease}})
			return err
		},
	}
	check := func(state string) {
		t.Helper()
		var wg sync.WaitGroup
		for name, op := range ops {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
				defer cancel()
				if err := op(ctx); !errors.Is(err, registry.ErrUnavailable) {
					t.Errorf("%s while Redis is %s: err = %v; want ErrUnavailable", name, state, err)
				}
			})
		}
		wg.Wait()
	}
	srv.Freeze()
	check("frozen")
	srv.Thaw()
	if err := st.Ping(t.Context()); err != nil {
		t.Fatalf("after thaw: %v", err)
	}
	srv.Stop()
	check("stopped")
	srv.Restart()
	if err := st.Ping(t.Context()); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if _, err := redisstore.New(t.Context(), redisstore.Options{URL: "redis://127.0.0.1:1?dial_timeout=100ms&max_retries=-1"}); !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("New with nothing listening: %v; want ErrUnavailable", err)
	}
}
