package storetest

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
)

// The contract cases of ambiguous outcomes: idempotent claims, undoing a
// claim, reconciliation, and leases that survive a store clock behind.
var ambiguityTests = []contractTest{
	{"ClaimIsIdempotentPerClaimID", testClaimIdempotent},
	{"ReleaseClaimUndoesExactlyThatClaim", testReleaseClaim},
	{"ReconcileEndsRecordsTheNodeDoesNotHold", testReconcileOrphans},
	{"ReconcileLeavesClaimsInFlightAlone", testReconcileVeto},
	{"ReconcileReportsMissingAndStaleHeldSessions", testReconcileHeld},
	{"LeasesNeverGoBackwardsWhenTheStoreClockIsBehind", testLeasesStoreClockBehind},
	{"ReadEventsReportsResumePointsAboveTheNewestEvent", testReadEventsAboveNewest},
}

const rsOrphaned = tetherv1.DisconnectReason_DISCONNECT_REASON_ORPHANED

func testClaimIdempotent(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	alive(t, st, "n1", "n2")
	prev := claim(t, st, "dev-a", "n2", "b1")
	req := registry.ClaimRequest{DeviceID: "dev-a", Node: "n1", Mode: modePong, Info: info("b1", nil), Now: now(), ClaimID: "claim-1"}
	first := claimReq(t, st, req)
	if first.Again || first.Replaced == nil || first.Replaced.Lease != prev.Lease {
		t.Fatalf("first claim = %+v; want a new lease replacing %d", first, prev.Lease)
	}
	mark := lastEvent(t, st)
	before := describe(get(t, st, "dev-a"))
	// The retry of a claim whose reply was lost: same id, same lease.
	again := claimReq(t, st, req)
	if !again.Again || again.Lease != first.Lease || again.Replaced != nil {
		t.Fatalf("retried claim = %+v; want lease %d again, nothing replaced", again, first.Lease)
	}
	if got := describe(get(t, st, "dev-a")); got != before {
		t.Fatalf("the retried claim changed the record:\n was %s\n now %s", before, got)
	}
	for _, e := range events(t, st, mark) {
		if e.Type != evOnline || e.Lease != first.Lease {
			t.Fatalf("the retried claim emitted %+v", e)
		}
	}
	// Another claim id is a new claim.
	req.ClaimID = "claim-2"
	if c := claimReq(t, st, req); c.Again || c.Lease <= first.Lease {
		t.Fatalf("claim with another id = %+v; want a new, higher lease", c)
	}
	// Once the session of claim-1 is gone, its id makes a new session.
	req.ClaimID = "claim-1"
	if c := claimReq(t, st, req); c.Again {
		t.Fatalf("claim-1 after it was replaced = %+v; want a new session", c)
	}
}

func testReleaseClaim(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	alive(t, st, "n1")
	c := claimReq(t, st, registry.ClaimRequest{DeviceID: "dev-a", Node: "n1", Mode: modePong, Now: now(), ClaimID: "lost-reply"})
	end := registry.Disconnect{Node: "n1", Reason: rsOrphaned, Time: now(), Message: "undone"}
	if err := st.ReleaseClaim(ctxT(t), "dev-a", "other-claim", end); !errors.Is(err, registry.ErrMissing) {
		t.Fatalf("ReleaseClaim of another claim id: %v; want ErrMissing", err)
	}
	if r := get(t, st, "dev-a"); r.Session == nil || r.Session.Lease != c.Lease {
		t.Fatalf("a foreign claim id ended the session: %s", describe(r))
	}
	mark := lastEvent(t, st)
	if err := st.ReleaseClaim(ctxT(t), "dev-a", "lost-reply", end); err != nil {
		t.Fatalf("ReleaseClaim: %v", err)
	}
	r := get(t, st, "dev-a")
	if r.Session != nil || r.LastDisconnect == nil || r.LastDisconnect.Lease != c.Lease || r.LastDisconnect.Reason != rsOrphaned {
		t.Fatalf("after ReleaseClaim: %s; want offline, lease %d ended ORPHANED", describe(r), c.Lease)
	}
	wantEvents(t, events(t, st, mark), ev{evOffline, "dev-a", c.Lease, rsOrphaned, "n1"})
	// Idempotent, and never touches a later claim.
	if err := st.ReleaseClaim(ctxT(t), "dev-a", "lost-reply", end); !errors.Is(err, registry.ErrMissing) {
		t.Fatalf("second ReleaseClaim: %v; want ErrMissing", err)
	}
	next := claimReq(t, st, registry.ClaimRequest{DeviceID: "dev-a", Node: "n1", Mode: modePong, Now: now(), ClaimID: "next"})
	if err := st.ReleaseClaim(ctxT(t), "dev-a", "lost-reply", end); !errors.Is(err, registry.ErrMissing) {
		t.Fatalf("ReleaseClaim after a newer claim: %v; want ErrMissing", err)
	}
	if r := get(t, st, "dev-a"); r.Session == nil || r.Session.Lease != next.Lease {
		t.Fatalf("an old claim id ended a newer session: %s", describe(r))
	}
	if err := st.ReleaseClaim(ctxT(t), "dev-unknown", "x", end); !errors.Is(err, registry.ErrMissing) {
		t.Fatalf("ReleaseClaim of an unknown device: %v; want ErrMissing", err)
	}
}

func held(pairs ...any) []registry.Held {
	var out []registry.Held
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, registry.Held{DeviceID: pairs[i].(string), Lease: pairs[i+1].(uint64)})
	}
	return out
}

func always(string, uint64) bool { return true }

func testReconcileOrphans(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	alive(t, st, "n1", "n2")
	kept := claim(t, st, "dev-kept", "n1", "")
	phantom := claim(t, st, "dev-phantom", "n1", "") // n1 never got the reply: it does not hold it
	other := claim(t, st, "dev-other", "n2", "")     // another node's session is none of n1's business
	released := claim(t, st, "dev-released", "n1", "")
	if err := st.Release(ctxT(t), "dev-released", registry.Disconnect{Lease: released.Lease, Reason: rsClosed, Time: now()}); err != nil {
		t.Fatal(err)
	}
	mark := lastEvent(t, st)
	res, err := st.Reconcile(ctxT(t), "n1", held("dev-kept", kept.Lease), always)
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if !slices.Equal(res.OrphanedIDs, []string{"dev-phantom"}) || len(res.Orphaned) != 1 || res.Orphaned[0].Lease != phantom.Lease ||
		res.Orphaned[0].Reason != rsOrphaned || len(res.Missing)+len(res.Stale) != 0 {
		t.Fatalf("Reconcile = %+v; want only dev-phantom (lease %d) ended as ORPHANED", res, phantom.Lease)
	}
	r := get(t, st, "dev-phantom")
	if r.Session != nil || r.LastDisconnect == nil || r.LastDisconnect.Lease != phantom.Lease || r.LastDisconnect.Reason != rsOrphaned || r.LastDisconnect.Node != "n1" {
		t.Fatalf("phantom after reconcile: %s", describe(r))
	}
	wantEvents(t, events(t, st, mark), ev{evOffline, "dev-phantom", phantom.Lease, rsOrphaned, "n1"})
	if r := get(t, st, "dev-kept"); r.Session == nil || r.Session.Lease != kept.Lease {
		t.Fatalf("held session after reconcile: %s", describe(r))
	}
	if r := get(t, st, "dev-other"); r.Session == nil || r.Session.Lease != other.Lease {
		t.Fatalf("another node's session after reconcile: %s", describe(r))
	}
	// A second pass finds nothing more to do.
	res, err = st.Reconcile(ctxT(t), "n1", held("dev-kept", kept.Lease), always)
	if err != nil || len(res.Orphaned)+len(res.Missing)+len(res.Stale) != 0 {
		t.Fatalf("second Reconcile = %+v, %v; want nothing", res, err)
	}
}

func testReconcileVeto(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	alive(t, st, "n1")
	inFlight := claim(t, st, "dev-a", "n1", "")
	var asked []registry.Held
	res, err := st.Reconcile(ctxT(t), "n1", nil, func(id string, lease uint64) bool {
		asked = append(asked, registry.Held{DeviceID: id, Lease: lease})
		return false // the caller's claim of this lease is still in flight
	})
	if err != nil || len(res.Orphaned) != 0 {
		t.Fatalf("Reconcile with a veto = %+v, %v; want nothing ended", res, err)
	}
	if !slices.Equal(asked, held("dev-a", inFlight.Lease)) {
		t.Fatalf("orphan was asked about %v; want dev-a lease %d", asked, inFlight.Lease)
	}
	if r := get(t, st, "dev-a"); r.Session == nil || r.Session.Lease != inFlight.Lease {
		t.Fatalf("vetoed record changed: %s", describe(r))
	}
}

func testReconcileHeld(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	alive(t, st, "n1", "n2")
	ok := claim(t, st, "dev-ok", "n1", "")
	gone := claim(t, st, "dev-gone", "n1", "")
	if err := st.Release(ctxT(t), "dev-gone", registry.Disconnect{Lease: gone.Lease, Reason: rsClosed, Time: now()}); err != nil {
		t.Fatal(err)
	}
	old := claim(t, st, "dev-taken", "n1", "")
	claim(t, st, "dev-taken", "n2", "")
	never := uint64(time.Now().Add(time.Hour).UnixMicro()) // a lease the registry never recorded
	res, err := st.Reconcile(ctxT(t), "n1", held("dev-ok", ok.Lease, "dev-gone", gone.Lease, "dev-taken", old.Lease, "dev-never", never), always)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(res.Missing, func(a, b registry.Held) int { return strings.Compare(a.DeviceID, b.DeviceID) })
	if !slices.Equal(res.Missing, held("dev-gone", gone.Lease, "dev-never", never)) {
		t.Fatalf("Missing = %v; want dev-gone and dev-never", res.Missing)
	}
	if !slices.Equal(res.Stale, held("dev-taken", old.Lease)) {
		t.Fatalf("Stale = %v; want dev-taken's old lease", res.Stale)
	}
	if len(res.Orphaned) != 0 {
		t.Fatalf("Orphaned = %v; want none", res.OrphanedIDs)
	}
}

// testLeasesStoreClockBehind: leases issued while the claiming replicas'
// clocks ran ahead of the store's (as when Redis fails over to, or restarts
// empty on, a host whose clock is behind) stay below every later lease,
// because the claiming replica's clock is a floor.
func testLeasesStoreClockBehind(t *testing.T, h Harness) {
	if h.Flush == nil {
		t.Skip("harness cannot lose data")
	}
	st := h.New(t, Options{})
	alive(t, st, "n1")
	ahead := 30 * time.Second // the store's clock is 30 s behind the replicas'
	old := claimReq(t, st, registry.ClaimRequest{DeviceID: "dev-a", Node: "n1", Mode: modePong, Now: now().Add(ahead)})
	if old.Lease < uint64(time.Now().Add(ahead-time.Second).UnixMicro()) {
		t.Fatalf("lease %d is below the claiming replica's clock", old.Lease)
	}
	st = h.Flush(t, st)
	alive(t, st, "n1")
	next := claimReq(t, st, registry.ClaimRequest{DeviceID: "dev-a", Node: "n1", Mode: modePong, Now: now().Add(ahead)})
	if next.Lease <= old.Lease {
		t.Fatalf("lease after the store lost its data %d <= %d issued before", next.Lease, old.Lease)
	}
	// The dead session's write-back is refused; the live one's is not.
	res, err := st.Remirror(ctxT(t), []registry.Live{{DeviceID: "dev-a", Lease: old.Lease, Node: "n1", ConnectedAt: now()}})
	if err != nil || len(res.Stale) != 1 {
		t.Fatalf("Remirror of the older lease = %+v, %v; want it refused as stale", res, err)
	}
	if tr, err := st.Touch(ctxT(t), []registry.Touch{{DeviceID: "dev-a", Lease: next.Lease, LastSeen: now()}}); err != nil || len(tr.Stale)+len(tr.Missing)+len(tr.Unknown) != 0 {
		t.Fatalf("Touch of the live lease = %+v, %v", tr, err)
	}
}

func testReadEventsAboveNewest(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	alive(t, st, "n1")
	claim(t, st, "dev-a", "n1", "")
	claim(t, st, "dev-b", "n1", "")
	last := lastEvent(t, st)
	if h.Flush != nil {
		// After the storage was reset, one event exists again and the old
		// resume point is above it.
		st = h.Flush(t, st)
		alive(t, st, "n1")
		claim(t, st, "dev-c", "n1", "")
		if _, err := st.ReadEvents(ctxT(t), last, 10, 0); !errors.Is(err, registry.ErrEventsExpired) {
			t.Fatalf("ReadEvents after an id from before the reset: %v; want ErrEventsExpired", err)
		}
	}
	// An id above the newest one can only come from another stream.
	above := bumpEventID(last)
	if _, err := st.ReadEvents(ctxT(t), above, 10, 0); !errors.Is(err, registry.ErrEventsExpired) {
		t.Fatalf("ReadEvents after %s (above the newest event): %v; want ErrEventsExpired", above, err)
	}
}

// bumpEventID returns an event id above id ("<a>-<b>" → "<a>-<b+1000>").
func bumpEventID(id string) string {
	a, b, _ := strings.Cut(id, "-")
	n, _ := strconv.ParseUint(b, 10, 64)
	return a + "-" + strconv.FormatUint(n+1000, 10)
}
