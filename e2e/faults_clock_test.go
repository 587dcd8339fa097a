package e2e

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/testredis"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/registry/redisstore"
)

// TestFaultRedisClockBehind is the "Redis whose clock is behind the old one"
// row of issue #12, at store level: it drives redisstore directly against a
// real redis-server, without the binaries. A Redis host's clock cannot be
// changed here, and libfaketime (Debian package faketime 0.9.10) does not
// work with Debian's redis-server: it aborts at start with "libfaketime:
// Unexpected recursive calls to clock_gettime() without proper
// initialization" (jemalloc); the server binary, static Go, ignores
// LD_PRELOAD anyway. So the replicas' clock is moved ahead instead
// (ClaimRequest.Now = now + 30 s), which makes Redis TIME read 30 s behind
// theirs, and the old Redis is one whose clock agreed with the replicas: its
// lease is what its TIME would have given (MinLease = the replicas' now in
// µs) and its event ids are the real ones + 30 s.
//
// Story: replica r1 holds device d with lease L from the old Redis. Redis is
// replaced by an empty one whose clock is 30 s behind (failover onto a
// badly synced host, or a restart). d's agent comes back on replica r2,
// which never saw d: its new lease must be above L. Then r1's re-mirror of
// its (dead) session L must be refused, so the record names r2. A watcher
// resuming after the old Redis's last event id (above every id of the new
// stream) must be told to re-snapshot (ErrEventsExpired), not given nothing.
func TestFaultRedisClockBehind(t *testing.T) {
	const skew = 30 * time.Second
	row := newFaultRow(t, "12e. Redis clock 30 s behind the old one (store level, no binaries)",
		"redisstore against a real redis-server; the old Redis agrees with the replicas' clock, the new one is empty and 30 s behind it (emulated by moving the replicas' clock 30 s ahead: libfaketime aborts Debian's redis-server at start, see the test's comment)",
		"a claim on the new Redis by a replica that never saw the device gets a lease above the old one; the dead session's re-mirror is refused (the record names the new session); resuming after the old Redis's last event id fails with ErrEventsExpired")
	rd := testredis.Start(t)
	ctx := t.Context()
	st, err := redisstore.New(ctx, redisstore.Options{URL: rd.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := func() time.Time { return time.Now().Add(skew) } // the replicas' clock
	alive := func(nodes ...string) {                        // the replicas' liveness keys, as they renew them
		for _, n := range nodes {
			if err := st.KeepNodeAlive(ctx, n, n+".invalid:7070", time.Minute); err != nil {
				t.Fatal(err)
			}
		}
	}
	alive("r1")

	const id = "ck-1"
	old, err := st.Claim(ctx, registry.ClaimRequest{DeviceID: id, Node: "r1", Now: now(), MinLease: uint64(now().UnixMicro())})
	if err != nil {
		t.Fatal(err)
	}
	oldLastReal := lastEventID(t, rd.Client())
	if oldLastReal == "" {
		t.Fatal("the claim wrote no event")
	}
	oldLast := shiftStreamID(t, oldLastReal, skew)

	rd.Restart() // empty; its TIME is 30 s behind the replicas' clock
	alive("r1", "r2")
	claimed, err := st.Claim(ctx, registry.ClaimRequest{DeviceID: id, Node: "r2", Now: now()})
	if err != nil {
		t.Fatal(err)
	}
	var bad []string
	if claimed.Lease <= old.Lease {
		bad = append(bad, fmt.Sprintf("lease went backwards: %d on the new Redis, %d before (%.1f s lower)", claimed.Lease, old.Lease, float64(old.Lease-claimed.Lease)/1e6))
	}
	st.Remirror(ctx, []registry.Live{{DeviceID: id, Lease: old.Lease, Node: "r1", ConnectedAt: now(), LastSeen: now()}})
	rec, err := st.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case rec.Session == nil:
		bad = append(bad, "after r1's re-mirror the device reads offline; want r2's session current")
	case rec.Session.Node != "r2" || rec.Session.Lease != claimed.Lease:
		bad = append(bad, fmt.Sprintf("r1's re-mirror of its dead session (lease %d) was accepted: the record names %s lease %d, want r2 lease %d", old.Lease, rec.Session.Node, rec.Session.Lease, claimed.Lease))
	}
	newLast := lastEventID(t, rd.Client())
	evs, err := st.ReadEvents(ctx, oldLast, 100, 0)
	resume := "refused (ErrEventsExpired)"
	if !errors.Is(err, registry.ErrEventsExpired) {
		resume = fmt.Sprintf("NOT refused: %d events, err %v", len(evs), err)
		bad = append(bad, fmt.Sprintf("resuming after the old Redis's last event %s (new stream's last %s): %d events, err %v; want ErrEventsExpired", oldLast, newLast, len(evs), err))
	}
	for _, b := range bad {
		t.Error(b)
	}
	row.add("old lease %d, new lease %d (%+.1f s); record after the dead session's re-mirror: %s; resume after the old last event: %s",
		old.Lease, claimed.Lease, (float64(claimed.Lease)-float64(old.Lease))/1e6, sessionString(rec), resume)
}

func sessionString(r registry.Record) string {
	if r.Session == nil {
		return "offline"
	}
	return fmt.Sprintf("%s lease %d", r.Session.Node, r.Session.Lease)
}

// shiftStreamID moves a stream id's millisecond part by d.
func shiftStreamID(t *testing.T, id string, d time.Duration) string {
	t.Helper()
	ms, seq, ok := strings.Cut(id, "-")
	v, err := strconv.ParseInt(ms, 10, 64)
	if !ok || err != nil {
		t.Fatalf("stream id %q", id)
	}
	return strconv.FormatInt(v+d.Milliseconds(), 10) + "-" + seq
}
