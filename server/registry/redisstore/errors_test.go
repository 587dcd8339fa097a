package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/internal/testredis"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/registry/redisstore"
	"github.com/tetherhq/tether/server/registry/storetest"
)

// Each error reply production Redis gives is classified one by one: the
// write's outcome is unknown (registry.ErrUnavailable, or Unknown entries
// in a batch), never "stale" (which would end a live session) and never
// "missing". The registry is exact again once the fault ends.
func TestErrorRepliesAreUnknownOutcomes(t *testing.T) {
	srv := testredis.Start(t)
	rdb := srv.Client()
	faults := []struct {
		kind  string
		start func(t *testing.T) (stop func())
	}{
		{"oom", func(t *testing.T) func() {
			// maxmemory below what is used, with noeviction: every
			// command that may grow memory answers OOM.
			mustDo(t, rdb, "CONFIG", "SET", "maxmemory-policy", "noeviction")
			mustDo(t, rdb, "CONFIG", "SET", "maxmemory", "1")
			return func() { mustDo(t, rdb, "CONFIG", "SET", "maxmemory", "0") }
		}},
		{"readonly", func(t *testing.T) func() {
			// A failover demoted this server: it is a replica now (of a
			// master that does not answer), reads work, writes are READONLY.
			mustDo(t, rdb, "REPLICAOF", "127.0.0.1", "1")
			return func() { mustDo(t, rdb, "REPLICAOF", "NO", "ONE") }
		}},
		{"busy", func(t *testing.T) func() {
			// A long script from another client: everyone else gets BUSY.
			mustDo(t, rdb, "CONFIG", "SET", "busy-reply-threshold", "50")
			other := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			done := make(chan struct{})
			go func() {
				defer close(done)
				other.Eval(context.Background(), "local t = redis.call('TIME'); while true do end", nil)
			}()
			waitBusy(t, rdb)
			return func() {
				for rdb.Do(context.Background(), "SCRIPT", "KILL").Err() != nil {
					time.Sleep(10 * time.Millisecond)
				}
				<-done
				other.Close()
			}
		}},
	}
	for _, f := range faults {
		t.Run(f.kind, func(t *testing.T) {
			st := open(t, srv.URL(), "err-"+f.kind, storetest.Options{})
			ctx := t.Context()
			if err := st.KeepNodeAlive(ctx, "n1", "a:1", time.Hour); err != nil {
				t.Fatal(err)
			}
			live := claim(t, st, "dev-live", "n1", 0)
			before, err := st.Get(ctx, "dev-live")
			if err != nil {
				t.Fatal(err)
			}
			stop := f.start(t)
			stopped := false
			defer func() {
				if !stopped {
					stop()
				}
			}()

			res, err := st.Touch(ctx, []registry.Touch{{DeviceID: "dev-live", Lease: live.Lease, LastSeen: time.Now()}})
			if err == nil && (len(res.Unknown) != 1 || len(res.Stale)+len(res.Missing) != 0) {
				t.Errorf("Touch under %s = %+v; want the entry unknown", f.kind, res)
			}
			if err != nil && !errors.Is(err, registry.ErrUnavailable) {
				t.Errorf("Touch under %s: %v; want ErrUnavailable", f.kind, err)
			}
			_, err = st.Claim(ctx, registry.ClaimRequest{DeviceID: "dev-new", Node: "n1", Now: time.Now(), ClaimID: "c1"})
			wantUnknown(t, f.kind, "Claim", err)
			err = st.UpdateInfo(ctx, "dev-live", live.Lease, &tetherv1.DeviceInfo{Hostname: "x"})
			wantUnknown(t, f.kind, "UpdateInfo", err)
			rm, err := st.Remirror(ctx, []registry.Live{{DeviceID: "dev-live", Lease: live.Lease, Node: "n1", ConnectedAt: time.Now()}})
			if err == nil && (len(rm.Unknown) != 1 || len(rm.Stale) != 0) {
				t.Errorf("Remirror under %s = %+v; want the entry unknown", f.kind, rm)
			}
			if f.kind == "oom" {
				// Renewal only extends a TTL, which allocates nothing:
				// the node stays alive while Redis refuses writes.
				if err := st.KeepNodeAlive(ctx, "n1", "a:1", time.Hour); err != nil {
					t.Errorf("KeepNodeAlive under OOM: %v", err)
				}
			}
			if k := st.ErrorsByKind()[f.kind]; k == 0 {
				t.Errorf("no error of kind %q counted: %v", f.kind, st.ErrorsByKind())
			}
			// A release either applies (under OOM it can: its first write,
			// HDEL, frees memory and Redis then lets the script finish) or
			// is unknown; never stale or missing.
			relErr := st.Release(ctx, "dev-live", registry.Disconnect{Lease: live.Lease, Reason: tetherv1.DisconnectReason_DISCONNECT_REASON_CLIENT_CLOSED, Time: time.Now()})
			if relErr != nil {
				wantUnknown(t, f.kind, "Release", relErr)
			}
			stop()
			stopped = true
			after, err := st.Get(ctx, "dev-live")
			switch {
			case err != nil:
				t.Fatalf("after %s: %v", f.kind, err)
			case relErr == nil && (after.Online() || after.LastDisconnect == nil || after.LastDisconnect.Lease != live.Lease):
				t.Fatalf("after %s the applied release left %+v / %+v", f.kind, after.Session, after.LastDisconnect)
			case relErr != nil && (after.Session == nil || after.Session.Lease != before.Session.Lease):
				t.Fatalf("after %s the live session reads %+v; want lease %d unchanged", f.kind, after.Session, live.Lease)
			}
			// The claim whose outcome was unknown is resolved by its id.
			if err := st.ReleaseClaim(ctx, "dev-new", "c1", registry.Disconnect{Time: time.Now()}); err != nil && !errors.Is(err, registry.ErrMissing) {
				t.Fatalf("ReleaseClaim after %s: %v", f.kind, err)
			}
			if r, err := st.Get(ctx, "dev-new"); err == nil && r.Online() {
				t.Fatalf("after %s and ReleaseClaim dev-new reads online: %+v", f.kind, r.Session)
			}
		})
	}
}

func wantUnknown(t *testing.T, kind, op string, err error) {
	t.Helper()
	if !errors.Is(err, registry.ErrUnavailable) || errors.Is(err, registry.ErrStaleLease) || errors.Is(err, registry.ErrMissing) {
		t.Errorf("%s under %s: %v; want an unknown outcome (ErrUnavailable)", op, kind, err)
	}
}

func mustDo(t *testing.T, rdb *redis.Client, args ...any) {
	t.Helper()
	if err := rdb.Do(context.Background(), args...).Err(); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
}

func waitBusy(t *testing.T, rdb *redis.Client) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := rdb.Ping(context.Background()).Err(); err != nil && redis.HasErrorPrefix(err, "BUSY") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("Redis never answered BUSY")
}

// RevokedMany answers thousands of tokens in a few pipelines.
func TestRevokedManyChecksTokensInPipelinedBatches(t *testing.T) {
	srv := testredis.Start(t)
	st := open(t, srv.URL(), "rev", storetest.Options{})
	ctx := t.Context()
	ids := make([]string, 2500)
	for i := range ids {
		ids[i] = fmt.Sprintf("tok-%04d", i)
	}
	for _, id := range []string{"tok-0007", "tok-2499"} {
		if err := st.Revoke(ctx, id, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	hook := &countHook{}
	st.Client().AddHook(hook)
	got, err := st.RevokedMany(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if want := id == "tok-0007" || id == "tok-2499"; got[id] != want {
			t.Fatalf("RevokedMany[%s] = %v; want %v", id, got[id], want)
		}
	}
	if hook.pipelines != 3 || len(hook.single) != 0 {
		t.Fatalf("RevokedMany of 2,500 tokens: %d pipelines, %d single commands; want 3 pipelines", hook.pipelines, len(hook.single))
	}
}

// BenchmarkRevokedMany20000 is one revocation pass over 20,000 sessions'
// tokens (go test -run '^$' -bench RevokedMany ./server/registry/redisstore/).
func BenchmarkRevokedMany20000(b *testing.B) {
	srv := testredis.Start(b)
	st := open(b, srv.URL(), "revb", storetest.Options{})
	ids := make([]string, 20000)
	for i := range ids {
		ids[i] = fmt.Sprintf("tok-%05d", i)
	}
	if err := st.Revoke(b.Context(), "tok-19999", time.Now().Add(time.Hour)); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		got, err := st.RevokedMany(b.Context(), ids)
		if err != nil || !got["tok-19999"] {
			b.Fatalf("RevokedMany: %v, %v", len(got), err)
		}
	}
}

// A plain redis:// URL that points at a Cluster node is refused at start
// with the fix in the message, instead of a replica that never gets ready.
func TestAPlainURLAtAClusterNodeIsRefusedWithAHint(t *testing.T) {
	c := testredis.StartCluster(t, 3)
	_, err := redisstore.New(t.Context(), redisstore.Options{URL: c.Nodes[0].URL()})
	if err == nil || !strings.Contains(err.Error(), "?cluster=true") {
		t.Fatalf("New(%s): %v; want a refusal that suggests ?cluster=true", c.Nodes[0].URL(), err)
	}
	st, err := redisstore.New(t.Context(), redisstore.Options{URL: c.SeedURL()})
	if err != nil {
		t.Fatalf("New(%s): %v", c.SeedURL(), err)
	}
	st.Close()
}
