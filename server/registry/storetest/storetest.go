package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
)

// Options sizes a store for a test. Zero values mean the store's defaults.
type Options struct {
	// EventRetention is roughly how many events the store retains (an
	// implementation may keep somewhat more, e.g. Redis MAXLEN ~).
	EventRetention int
	// DeviceRetention is how long a record is kept after its last write.
	DeviceRetention time.Duration
	// HistoryLen, HistoryRetention, NeverConnectedRetention size the fleet
	// views (RunFleet).
	HistoryLen              int
	HistoryRetention        time.Duration
	NeverConnectedRetention time.Duration
}

// Harness adapts one Store implementation to the suite.
type Harness struct {
	// New returns a store whose storage is empty and private to it (for
	// Redis: the same redis-server, a fresh key prefix). Required. The
	// harness closes it when the test ends.
	New func(t *testing.T, opts Options) registry.Store
	// Flush makes the storage behind st lose all of its data, as a restart
	// without persistence does (Redis: FLUSHALL; memstore: the process
	// restarts with a new, empty store), and returns the store to go on
	// with. Optional: tests of data loss are skipped without it.
	Flush func(t *testing.T, st registry.Store) registry.Store
	// Replica returns a second store sharing st's storage, as a second
	// server replica would. Optional: multi-replica tests are skipped
	// without it.
	Replica func(t *testing.T, st registry.Store) registry.Store
	// Wrap runs each test body, e.g. inside synctest.Test so time is
	// virtual. Optional.
	Wrap func(t *testing.T, body func(t *testing.T))
}

// contractTest is one named case of a contract suite.
type contractTest struct {
	name string
	fn   func(t *testing.T, h Harness)
}

// runTests runs each case as a subtest, inside h.Wrap when the harness has
// one.
func runTests(t *testing.T, h Harness, tests []contractTest) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if h.Wrap != nil {
				h.Wrap(t, func(t *testing.T) { tc.fn(t, h) })
				return
			}
			tc.fn(t, h)
		})
	}
}

// Run runs the whole contract suite against h.
func Run(t *testing.T, h Harness) {
	tests := []contractTest{
		{"ClaimAllocatesLeasesAboveEveryEarlierLeaseAndMinLease", testClaimLeases},
		{"ClaimLeasesFollowTheClock", testClaimLeasesFollowTheClock},
		{"ClaimReplacesTheCurrentSession", testClaimReplaces},
		{"ClaimRecordsTheRestartVerdictOnThePreviousEnd", testRestartVerdict},
		{"StaleWritesChangeNothing", testStaleWrites},
		{"ReleaseEndsTheSessionAndEmitsOffline", testRelease},
		{"UpdateInfoReplacesTheInfoAndEmitsInfoChanged", testUpdateInfo},
		{"TouchRecordsLastSeenAndRTTWithoutEvents", testTouch},
		{"GetOfAnUnknownDeviceIsNotFound", testGetUnknown},
		{"SessionsOnUnknownOrDroppedNodesReadOffline", testNodeUnknownOrDropped},
		{"SessionsReadOfflineWhenTheirNodeLapses", testNodeLapse},
		{"ClaimAfterNodeLossEndsTheOldSessionAsNodeLost", testClaimAfterNodeLoss},
		{"NodeAddrReturnsTheAddressOfLiveNodesOnly", testNodeAddr},
		{"ListPagesInDeviceIDOrder", testListPaging},
		{"ListFiltersByPresenceAndLabels", testListFilters},
		{"ListCapsThePageSize", testListCap},
		{"ReadEventsReturnsEventsInOrderAndResumes", testReadEvents},
		{"ReadEventsWaitsForTheNextEvent", testReadEventsWaits},
		{"ReadEventsReturnsNothingWhenTheWaitEnds", testReadEventsTimeout},
		{"ReadEventsReportsTrimmedResumePoints", testReadEventsTrimmed},
		{"ReadEventsReportsResumePointsLostWithTheStorage", testReadEventsFlushed},
		{"LeasesKeepIncreasingAfterTheStorageIsLost", testLeasesAfterFlush},
		{"RemirrorRestoresLiveSessionsAfterDataLoss", testRemirrorAfterFlush},
		{"RemirrorRefusesSessionsSupersededByANewerLease", testRemirrorStale},
		{"OfflineRecordsExpireAfterTheRetention", testRetention},
		{"ConcurrentClaimsLeaveExactlyOneCurrentSession", testConcurrentClaims},
		{"ReplicasShareLeasesAndFencing", testReplicas},
	}
	tests = append(tests, ambiguityTests...)
	tests = append(tests, jobTests...)
	runTests(t, h, tests)
}

// Shorthands.
const (
	evOnline    = tetherv1.EventType_EVENT_TYPE_ONLINE
	evOffline   = tetherv1.EventType_EVENT_TYPE_OFFLINE
	evReplaced  = tetherv1.EventType_EVENT_TYPE_REPLACED
	evInfo      = tetherv1.EventType_EVENT_TYPE_INFO_CHANGED
	rsReplaced  = tetherv1.DisconnectReason_DISCONNECT_REASON_REPLACED
	rsNodeLost  = tetherv1.DisconnectReason_DISCONNECT_REASON_NODE_LOST
	rsClosed    = tetherv1.DisconnectReason_DISCONNECT_REASON_CLIENT_CLOSED
	rsPing      = tetherv1.DisconnectReason_DISCONNECT_REASON_PING_TIMEOUT
	rtRestarted = tetherv1.DeviceRestart_DEVICE_RESTART_RESTARTED
	rtSameBoot  = tetherv1.DeviceRestart_DEVICE_RESTART_SAME_BOOT
	rtUnknown   = tetherv1.DeviceRestart_DEVICE_RESTART_UNSPECIFIED
	modePong    = tetherv1.LivenessMode_LIVENESS_MODE_APP_PONG
	nodeTTL     = time.Hour
)

func ctxT(t *testing.T) context.Context { return t.Context() }

// now returns a time without monotonic reading, rounded to microseconds,
// so it compares equal after any store's round trip.
func now() time.Time { return time.Now().Round(0).Truncate(time.Microsecond) }

func info(boot string, labels map[string]string) *tetherv1.DeviceInfo {
	return &tetherv1.DeviceInfo{Hostname: "host", Os: "linux", Arch: "amd64", BootId: boot, Labels: labels, IpAddresses: []string{"10.0.0.2"}}
}

func alive(t *testing.T, st registry.Store, nodes ...string) {
	t.Helper()
	for _, n := range nodes {
		if err := st.KeepNodeAlive(ctxT(t), n, n+".internal:7001", nodeTTL); err != nil {
			t.Fatalf("KeepNodeAlive(%s): %v", n, err)
		}
	}
}

func claim(t *testing.T, st registry.Store, id, node, boot string) registry.Claimed {
	t.Helper()
	return claimReq(t, st, registry.ClaimRequest{DeviceID: id, Node: node, RemoteAddr: "192.0.2.1:5000", Mode: modePong, Info: info(boot, nil), Now: now()})
}

func claimReq(t *testing.T, st registry.Store, req registry.ClaimRequest) registry.Claimed {
	t.Helper()
	c, err := st.Claim(ctxT(t), req)
	if err != nil {
		t.Fatalf("Claim(%s on %s): %v", req.DeviceID, req.Node, err)
	}
	if c.Lease == 0 {
		t.Fatalf("Claim(%s): lease 0", req.DeviceID)
	}
	return c
}

func get(t *testing.T, st registry.Store, id string) registry.Record {
	t.Helper()
	r, err := st.Get(ctxT(t), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return r
}

func lastEvent(t *testing.T, st registry.Store) string {
	t.Helper()
	id, err := st.LastEventID(ctxT(t))
	if err != nil {
		t.Fatalf("LastEventID: %v", err)
	}
	return id
}

// events returns every event after `after` without waiting.
func events(t *testing.T, st registry.Store, after string) []registry.Event {
	t.Helper()
	var all []registry.Event
	for {
		evs, err := st.ReadEvents(ctxT(t), after, 100, 0)
		if err != nil {
			t.Fatalf("ReadEvents(%q): %v", after, err)
		}
		if len(evs) == 0 {
			return all
		}
		all = append(all, evs...)
		after = evs[len(evs)-1].ID
	}
}

type ev struct {
	Type   registry.EventType
	Device string
	Lease  uint64
	Reason tetherv1.DisconnectReason
	Node   string
}

func (e ev) String() string {
	return fmt.Sprintf("{%s %s lease=%d %s node=%s}", e.Type, e.Device, e.Lease, e.Reason, e.Node)
}

func wantEvents(t *testing.T, got []registry.Event, want ...ev) {
	t.Helper()
	g := make([]ev, len(got))
	for i, e := range got {
		g[i] = ev{e.Type, e.DeviceID, e.Lease, e.Reason, e.Node}
		if e.ID == "" || e.Time.IsZero() {
			t.Errorf("event %d %v has no id or time: %+v", i, g[i], e)
		}
	}
	if !slices.Equal(g, want) {
		t.Fatalf("events:\n got  %v\n want %v", g, want)
	}
}

// eventually polls cond until it holds or a generous deadline passes. Inside
// a synctest bubble the sleeps take no real time.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// describe renders a record with times as instants, for comparisons.
func describe(r registry.Record) string {
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "0"
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	s := fmt.Sprintf("%s lease=%d first=%s info=%v", r.DeviceID, r.Lease, ts(r.FirstSeen), r.Info)
	if x := r.Session; x != nil {
		s += fmt.Sprintf(" session={%d %s %s c=%s s=%s rtt=%v %s}", x.Lease, x.Node, x.RemoteAddr, ts(x.ConnectedAt), ts(x.LastSeen), x.RTT, x.Mode)
	}
	if d := r.LastDisconnect; d != nil {
		s += fmt.Sprintf(" last={%d %s %s %s %q %s}", d.Lease, d.Node, d.Reason, ts(d.Time), d.Message, d.Restart)
	}
	return s
}

func testClaimLeases(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	alive(t, st, "n1")
	first := claim(t, st, "dev-a", "n1", "b1").Lease
	second := claim(t, st, "dev-a", "n1", "b1").Lease
	if second <= first {
		t.Fatalf("second lease %d <= first %d", second, first)
	}
	floor := second + 1_000_000_000
	third := claimReq(t, st, registry.ClaimRequest{DeviceID: "dev-a", Node: "n1", Now: now(), MinLease: floor}).Lease
	if third <= floor {
		t.Fatalf("lease %d not above MinLease %d", third, floor)
	}
	fourth := claim(t, st, "dev-a", "n1", "b1").Lease
	if fourth <= third {
		t.Fatalf("lease %d after MinLease jump not above %d", fourth, third)
	}
	if r := get(t, st, "dev-a"); r.Lease != fourth || r.Session == nil || r.Session.Lease != fourth {
		t.Fatalf("record after claims: %s; want lease %d current", describe(r), fourth)
	}
	// Leases of one device do not depend on other devices.
	if other := claim(t, st, "dev-b", "n1", "").Lease; other == 0 {
		t.Fatal("lease 0")
	}
}

func testClaimLeasesFollowTheClock(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	alive(t, st, "n1")
	// The store's clock may be another machine's (Redis TIME); allow skew.
	before := time.Now().Add(-time.Minute).UnixMicro()
	lease := claim(t, st, "dev-a", "n1", "").Lease
	after := time.Now().Add(time.Minute).UnixMicro()
	if lease < uint64(before) || lease > uint64(after) {
		t.Fatalf("lease %d is not the current time in microseconds (%d..%d)", lease, before, after)
	}
}

func testClaimReplaces(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	alive(t, st, "n1", "n2")
	start := lastEvent(t, st)
	old := claim(t, st, "dev-a", "n1", "boot-1")
	at := now().Add(time.Second)
	c := claimReq(t, st, registry.ClaimRequest{DeviceID: "dev-a", Node: "n2", RemoteAddr: "192.0.2.9:6000", Mode: modePong, Info: info("boot-1", map[string]string{"site": "b"}), Now: at})
	if c.Replaced == nil {
		t.Fatal("Claimed.Replaced is nil; want the old session")
	}
	r := *c.Replaced
	if r.Lease != old.Lease || r.Node != "n1" || r.Reason != rsReplaced || !r.Time.Equal(at) || r.Restart != rtSameBoot {
		t.Fatalf("Replaced = %+v; want lease %d node n1 REPLACED at %v SAME_BOOT", r, old.Lease, at)
	}
	rec := get(t, st, "dev-a")
	if rec.Session == nil || rec.Session.Lease != c.Lease || rec.Session.Node != "n2" || rec.Session.RemoteAddr != "192.0.2.9:6000" ||
		!rec.Session.ConnectedAt.Equal(at) || rec.Session.Mode != modePong {
		t.Fatalf("record session: %s", describe(rec))
	}
	if ld := rec.LastDisconnect; ld == nil || ld.Lease != old.Lease || ld.Reason != rsReplaced || ld.Node != "n1" || ld.Restart != rtSameBoot || !ld.Time.Equal(at) {
		t.Fatalf("record last disconnect: %s", describe(rec))
	}
	if rec.Info.GetLabels()["site"] != "b" {
		t.Fatalf("info not replaced by the claim: %s", describe(rec))
	}
	wantEvents(t, events(t, st, start),
		ev{evOnline, "dev-a", old.Lease, 0, "n1"},
		ev{evReplaced, "dev-a", old.Lease, rsReplaced, "n1"},
		ev{evOnline, "dev-a", c.Lease, 0, "n2"},
	)
	if first := claim(t, st, "dev-new", "n1", ""); first.Replaced != nil {
		t.Fatalf("first claim of a device replaced %+v", first.Replaced)
	}
}

func testRestartVerdict(t *testing.T, h Harness) {
	cases := []struct {
		name       string
		prev, next string
		want       tetherv1.DeviceRestart
	}{
		{"new boot id means restarted", "boot-1", "boot-2", rtRestarted},
		{"same boot id means same boot", "boot-1", "boot-1", rtSameBoot},
		{"no previous boot id is unknown", "", "boot-1", rtUnknown},
		{"no new boot id is unknown", "boot-1", "", rtUnknown},
	}
	st := h.New(t, Options{})
	alive(t, st, "n1")
	// Cases are not subtests: t.Run is not allowed inside a synctest bubble.
	for i, tc := range cases {
		// While the previous session is current: the replaced end.
		id := fmt.Sprintf("dev-live-%d", i)
		old := claim(t, st, id, "n1", tc.prev)
		c := claim(t, st, id, "n1", tc.next)
		if c.Replaced == nil || c.Replaced.Restart != tc.want {
			t.Errorf("%s: Replaced = %+v; want restart %s", tc.name, c.Replaced, tc.want)
		}
		if ld := get(t, st, id).LastDisconnect; ld == nil || ld.Lease != old.Lease || ld.Restart != tc.want {
			t.Errorf("%s: LastDisconnect = %+v; want lease %d restart %s", tc.name, ld, old.Lease, tc.want)
		}

		// After the previous session was released: the recorded end.
		id = fmt.Sprintf("dev-gone-%d", i)
		old = claim(t, st, id, "n1", tc.prev)
		if err := st.Release(ctxT(t), id, registry.Disconnect{Lease: old.Lease, Node: "n1", Reason: rsPing, Time: now()}); err != nil {
			t.Fatal(err)
		}
		if c := claim(t, st, id, "n1", tc.next); c.Replaced != nil {
			t.Errorf("%s: claim after release replaced %+v", tc.name, c.Replaced)
		}
		if ld := get(t, st, id).LastDisconnect; ld == nil || ld.Lease != old.Lease || ld.Reason != rsPing || ld.Restart != tc.want {
			t.Errorf("%s: LastDisconnect after release = %+v; want lease %d PING_TIMEOUT restart %s", tc.name, ld, old.Lease, tc.want)
		}
	}
}

func testStaleWrites(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	alive(t, st, "n1")
	old := claim(t, st, "dev-a", "n1", "b1")
	cur := claim(t, st, "dev-a", "n1", "b1")
	released := claim(t, st, "dev-r", "n1", "b1")
	if err := st.Release(ctxT(t), "dev-r", registry.Disconnect{Lease: released.Lease, Reason: rsClosed, Time: now()}); err != nil {
		t.Fatal(err)
	}
	beforeA, beforeR := describe(get(t, st, "dev-a")), describe(get(t, st, "dev-r"))
	mark := lastEvent(t, st)

	// Each refused write has one outcome: stale when a higher lease was
	// issued (the session must end), missing when the record does not show
	// the lease as current and none higher exists (write it back).
	writes := []struct {
		name   string
		device string
		lease  uint64
		want   error
	}{
		{"a replaced lease", "dev-a", old.Lease, registry.ErrStaleLease},
		{"a lease never issued", "dev-a", cur.Lease + 1, registry.ErrMissing},
		{"lease zero", "dev-a", 0, registry.ErrStaleLease},
		{"a released lease", "dev-r", released.Lease, registry.ErrMissing},
		{"an unknown device", "dev-unknown", cur.Lease, registry.ErrMissing},
	}
	for _, w := range writes {
		err := st.UpdateInfo(ctxT(t), w.device, w.lease, info("evil", map[string]string{"x": "y"}))
		if !errors.Is(err, w.want) {
			t.Errorf("%s: UpdateInfo: err = %v; want %v", w.name, err, w.want)
		}
		err = st.Release(ctxT(t), w.device, registry.Disconnect{Lease: w.lease, Node: "n9", Reason: rsClosed, Time: now()})
		if !errors.Is(err, w.want) {
			t.Errorf("%s: Release: err = %v; want %v", w.name, err, w.want)
		}
		touch := registry.Touch{DeviceID: w.device, Lease: w.lease, LastSeen: now().Add(time.Hour), RTT: time.Second}
		res, err := st.Touch(ctxT(t), []registry.Touch{touch})
		got := res.Stale
		if w.want == registry.ErrMissing {
			got = res.Missing
		}
		if err != nil || len(got) != 1 || got[0] != touch || len(res.Stale)+len(res.Missing)+len(res.Unknown) != 1 {
			t.Errorf("%s: Touch: %+v, err = %v; want the touch back as %v only", w.name, res, err, w.want)
		}
	}
	if got := describe(get(t, st, "dev-a")); got != beforeA {
		t.Errorf("stale writes changed the record:\n was %s\n now %s", beforeA, got)
	}
	if got := describe(get(t, st, "dev-r")); got != beforeR {
		t.Errorf("stale writes changed the released record:\n was %s\n now %s", beforeR, got)
	}
	if _, err := st.Get(ctxT(t), "dev-unknown"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("stale writes created a record for an unknown device: %v", err)
	}
	if evs := events(t, st, mark); len(evs) != 0 {
		t.Errorf("stale writes emitted events: %v", evs)
	}
}

func testRelease(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	alive(t, st, "n1")
	c := claim(t, st, "dev-a", "n1", "b1")
	mark := lastEvent(t, st)
	end := registry.Disconnect{Lease: c.Lease, Node: "n1", Reason: rsPing, Time: now(), Message: "no pong in 10s"}
	if err := st.Release(ctxT(t), "dev-a", end); err != nil {
		t.Fatal(err)
	}
	r := get(t, st, "dev-a")
	if r.Online() || r.Session != nil {
		t.Fatalf("released device still online: %s", describe(r))
	}
	ld := r.LastDisconnect
	if ld == nil || ld.Lease != end.Lease || ld.Node != "n1" || ld.Reason != rsPing || !ld.Time.Equal(end.Time) || ld.Message != end.Message {
		t.Fatalf("LastDisconnect = %+v; want %+v", ld, end)
	}
	if r.Lease != c.Lease {
		t.Fatalf("Record.Lease = %d after release; want the last lease %d", r.Lease, c.Lease)
	}
	wantEvents(t, events(t, st, mark), ev{evOffline, "dev-a", c.Lease, rsPing, "n1"})
	if err := st.Release(ctxT(t), "dev-a", end); !errors.Is(err, registry.ErrMissing) {
		t.Fatalf("second release: %v; want ErrMissing (nothing left to end)", err)
	}
}

func testUpdateInfo(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	alive(t, st, "n1")
	c := claim(t, st, "dev-a", "n1", "b1")
	mark := lastEvent(t, st)
	want := &tetherv1.DeviceInfo{Mac: "aa:bb:cc:dd:ee:ff", Hostname: "renamed", IpAddresses: []string{"10.0.0.3", "fd00::3"}, Os: "linux debian", Arch: "arm64",
		Labels: map[string]string{"site": "berlin", "rack": "7"}, BootId: "b1", AgentVersion: "v1.2.3"}
	// The store may keep what it is given (registry.Leases): pass a copy
	// and leave it alone.
	if err := st.UpdateInfo(ctxT(t), "dev-a", c.Lease, proto.Clone(want).(*tetherv1.DeviceInfo)); err != nil {
		t.Fatal(err)
	}
	r := get(t, st, "dev-a")
	r.Info.Hostname = "changed by a reader" // readers get their own copies
	if r = get(t, st, "dev-a"); !proto.Equal(r.Info, want) {
		t.Fatalf("info = %v; want %v", r.Info, want)
	}
	if r.Session == nil || r.Session.Lease != c.Lease {
		t.Fatalf("info update changed the session: %s", describe(r))
	}
	wantEvents(t, events(t, st, mark), ev{evInfo, "dev-a", c.Lease, 0, "n1"})
}

func testTouch(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	alive(t, st, "n1")
	a := claim(t, st, "dev-a", "n1", "")
	b := claim(t, st, "dev-b", "n1", "")
	mark := lastEvent(t, st)
	seen := now().Add(30 * time.Second)
	res, err := st.Touch(ctxT(t), []registry.Touch{
		{DeviceID: "dev-a", Lease: a.Lease, LastSeen: seen, RTT: 12 * time.Millisecond},
		{DeviceID: "dev-b", Lease: b.Lease, LastSeen: seen.Add(time.Second), RTT: 3 * time.Microsecond},
	})
	if err != nil || len(res.Stale)+len(res.Missing)+len(res.Unknown) != 0 {
		t.Fatalf("Touch: %+v, err %v", res, err)
	}
	if s := get(t, st, "dev-a").Session; s == nil || !s.LastSeen.Equal(seen) || s.RTT != 12*time.Millisecond {
		t.Fatalf("dev-a session after touch: %+v", s)
	}
	if s := get(t, st, "dev-b").Session; s == nil || !s.LastSeen.Equal(seen.Add(time.Second)) || s.RTT != 3*time.Microsecond {
		t.Fatalf("dev-b session after touch: %+v", s)
	}
	if evs := events(t, st, mark); len(evs) != 0 {
		t.Fatalf("touch emitted events: %v", evs)
	}
	if res, err := st.Touch(ctxT(t), nil); err != nil || len(res.Stale)+len(res.Missing)+len(res.Unknown) != 0 {
		t.Fatalf("empty Touch: %+v, %v", res, err)
	}
}

func testGetUnknown(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	if _, err := st.Get(ctxT(t), "nobody"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get(unknown) err = %v; want ErrNotFound", err)
	}
}

func testNodeUnknownOrDropped(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	seen := now()
	c := claimReq(t, st, registry.ClaimRequest{DeviceID: "dev-a", Node: "never-registered", Now: seen})
	r := get(t, st, "dev-a")
	if r.Online() {
		t.Fatalf("session on a node that never registered reads online: %s", describe(r))
	}
	if ld := r.LastDisconnect; ld == nil || ld.Lease != c.Lease || ld.Node != "never-registered" || ld.Reason != rsNodeLost || !ld.Time.Equal(seen) {
		t.Fatalf("LastDisconnect = %+v; want NODE_LOST of lease %d at %v", ld, c.Lease, seen)
	}
	if r.Lease != c.Lease {
		t.Fatalf("Record.Lease = %d; want %d", r.Lease, c.Lease)
	}

	alive(t, st, "n1")
	c = claim(t, st, "dev-b", "n1", "")
	if !get(t, st, "dev-b").Online() {
		t.Fatal("session on a live node reads offline")
	}
	if err := st.DropNode(ctxT(t), "n1"); err != nil {
		t.Fatal(err)
	}
	if r := get(t, st, "dev-b"); r.Online() || r.LastDisconnect == nil || r.LastDisconnect.Reason != rsNodeLost || r.LastDisconnect.Lease != c.Lease {
		t.Fatalf("after DropNode: %s; want offline NODE_LOST", describe(r))
	}
	// The session is still the stored current one: its node may come back
	// (e.g. after a partition) and its writes are still accepted.
	alive(t, st, "n1")
	if r := get(t, st, "dev-b"); !r.Online() || r.Session.Lease != c.Lease {
		t.Fatalf("after the node renewed again: %s; want online", describe(r))
	}
}

func testNodeLapse(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	alive(t, st, "n1")
	c := claim(t, st, "dev-a", "n1", "")
	seen := now()
	if _, err := st.Touch(ctxT(t), []registry.Touch{{DeviceID: "dev-a", Lease: c.Lease, LastSeen: seen}}); err != nil {
		t.Fatal(err)
	}
	if !get(t, st, "dev-a").Online() {
		t.Fatal("offline before the lapse")
	}
	if err := st.KeepNodeAlive(ctxT(t), "n1", "n1.internal:7001", 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the session reads offline", func() bool { return !get(t, st, "dev-a").Online() })
	r := get(t, st, "dev-a")
	if ld := r.LastDisconnect; ld == nil || ld.Reason != rsNodeLost || ld.Lease != c.Lease || ld.Node != "n1" || !ld.Time.Equal(seen) {
		t.Fatalf("LastDisconnect = %+v; want NODE_LOST of lease %d on n1 at last seen %v", ld, c.Lease, seen)
	}
	page, err := st.List(ctxT(t), registry.ListQuery{Presence: registry.PresenceOnline})
	if err != nil || len(page.Records) != 0 {
		t.Fatalf("List(online) = %v, %v; want nothing", page.Records, err)
	}
	if _, err := st.NodeAddr(ctxT(t), "n1"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("NodeAddr of a lapsed node: %v; want ErrNotFound", err)
	}
}

func testClaimAfterNodeLoss(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	alive(t, st, "n1", "n2")
	seen := now()
	old := claimReq(t, st, registry.ClaimRequest{DeviceID: "dev-a", Node: "n1", Info: info("boot-1", nil), Now: seen})
	if err := st.DropNode(ctxT(t), "n1"); err != nil {
		t.Fatal(err)
	}
	mark := lastEvent(t, st)
	c := claimReq(t, st, registry.ClaimRequest{DeviceID: "dev-a", Node: "n2", Info: info("boot-2", nil), Now: seen.Add(time.Minute)})
	if c.Lease <= old.Lease {
		t.Fatalf("lease %d <= %d", c.Lease, old.Lease)
	}
	if r := c.Replaced; r == nil || r.Lease != old.Lease || r.Node != "n1" || r.Reason != rsNodeLost || r.Restart != rtRestarted {
		t.Fatalf("Replaced = %+v; want the lost session (lease %d, n1, NODE_LOST, RESTARTED)", r, old.Lease)
	}
	r := get(t, st, "dev-a")
	if !r.Online() || r.Session.Node != "n2" {
		t.Fatalf("record after takeover: %s", describe(r))
	}
	if ld := r.LastDisconnect; ld == nil || ld.Lease != old.Lease || ld.Reason != rsNodeLost || ld.Restart != rtRestarted {
		t.Fatalf("LastDisconnect = %+v", ld)
	}
	wantEvents(t, events(t, st, mark),
		ev{evOffline, "dev-a", old.Lease, rsNodeLost, "n1"},
		ev{evOnline, "dev-a", c.Lease, 0, "n2"},
	)
}

func testNodeAddr(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	if _, err := st.NodeAddr(ctxT(t), "n1"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("NodeAddr(unknown) = %v; want ErrNotFound", err)
	}
	if err := st.KeepNodeAlive(ctxT(t), "n1", "10.1.0.1:7001", nodeTTL); err != nil {
		t.Fatal(err)
	}
	if err := st.KeepNodeAlive(ctxT(t), "n1", "10.1.0.9:7001", nodeTTL); err != nil {
		t.Fatal(err)
	}
	if addr, err := st.NodeAddr(ctxT(t), "n1"); err != nil || addr != "10.1.0.9:7001" {
		t.Fatalf("NodeAddr = %q, %v; want the newest address", addr, err)
	}
	if err := st.DropNode(ctxT(t), "n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.NodeAddr(ctxT(t), "n1"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("NodeAddr after DropNode = %v; want ErrNotFound", err)
	}
	if err := st.DropNode(ctxT(t), "n1"); err != nil {
		t.Fatalf("dropping a dropped node: %v", err)
	}
}

func ids(rs []registry.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.DeviceID
	}
	return out
}

// listAll pages through q and returns the ids and the number of pages.
func listAll(t *testing.T, st registry.Store, q registry.ListQuery) ([]string, int) {
	t.Helper()
	var all []string
	pages := 0
	for {
		page, err := st.List(ctxT(t), q)
		if err != nil {
			t.Fatalf("List(%+v): %v", q, err)
		}
		pages++
		if len(page.Records) > q.PageLimit() {
			t.Fatalf("page of %d records; limit %d", len(page.Records), q.PageLimit())
		}
		all = append(all, ids(page.Records)...)
		if page.Next == "" {
			return all, pages
		}
		if page.Next <= q.After {
			t.Fatalf("Next %q does not advance past %q", page.Next, q.After)
		}
		q.After = page.Next
		if pages > 10000 {
			t.Fatal("List does not end")
		}
	}
}

func testListPaging(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	alive(t, st, "n1")
	var want []string
	for i := 24; i >= 0; i-- { // claimed out of order on purpose
		id := fmt.Sprintf("dev-%02d", i)
		claim(t, st, id, "n1", "")
		want = append(want, id)
	}
	slices.Sort(want)

	got, pages := listAll(t, st, registry.ListQuery{Limit: 10})
	if !slices.Equal(got, want) || pages < 3 {
		t.Fatalf("paged list = %v in %d pages; want %v in 3", got, pages, want)
	}
	page, err := st.List(ctxT(t), registry.ListQuery{})
	if err != nil || !slices.Equal(ids(page.Records), want) || page.Next != "" {
		t.Fatalf("default page = %v next %q, %v; want all 25, no next", ids(page.Records), page.Next, err)
	}
	page, err = st.List(ctxT(t), registry.ListQuery{After: "dev-10", Limit: 3})
	if err != nil || !slices.Equal(ids(page.Records), []string{"dev-11", "dev-12", "dev-13"}) || page.Next != "dev-13" {
		t.Fatalf("page after dev-10 = %v next %q, %v", ids(page.Records), page.Next, err)
	}
	page, err = st.List(ctxT(t), registry.ListQuery{After: "dev-095"}) // not an id
	if err != nil || !slices.Equal(ids(page.Records), want[10:]) {
		t.Fatalf("page after a non-id = %v, %v", ids(page.Records), err)
	}
	page, err = st.List(ctxT(t), registry.ListQuery{After: "dev-24"})
	if err != nil || len(page.Records) != 0 || page.Next != "" {
		t.Fatalf("page after the last id = %v next %q, %v; want empty", ids(page.Records), page.Next, err)
	}
	full, err := st.List(ctxT(t), registry.ListQuery{Limit: 25})
	if err != nil || len(full.Records) != 25 {
		t.Fatalf("List(25) = %d records, %v", len(full.Records), err)
	}
	if got := full.Records[3]; got.DeviceID != "dev-03" || got.Session == nil || got.Info.GetHostname() != "host" {
		t.Fatalf("listed record is not complete: %s", describe(got))
	}
}

func testListFilters(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	alive(t, st, "n1", "n2")
	claimL := func(id, node string, labels map[string]string) registry.Claimed {
		return claimReq(t, st, registry.ClaimRequest{DeviceID: id, Node: node, Info: info("", labels), Now: now()})
	}
	claimL("a-online-berlin", "n1", map[string]string{"site": "berlin", "tier": "edge"})
	off := claimL("b-offline-berlin", "n1", map[string]string{"site": "berlin"})
	claimL("c-online-paris", "n1", map[string]string{"site": "paris", "tier": "edge"})
	claimL("d-lost-berlin", "n2", map[string]string{"site": "berlin", "tier": "edge"})
	claimL("e-online-nolabels", "n1", nil)
	if err := st.Release(ctxT(t), "b-offline-berlin", registry.Disconnect{Lease: off.Lease, Reason: rsClosed, Time: now()}); err != nil {
		t.Fatal(err)
	}
	if err := st.DropNode(ctxT(t), "n2"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		q    registry.ListQuery
		want []string
	}{
		{"everything", registry.ListQuery{}, []string{"a-online-berlin", "b-offline-berlin", "c-online-paris", "d-lost-berlin", "e-online-nolabels"}},
		{"online excludes released and node-lost sessions", registry.ListQuery{Presence: registry.PresenceOnline}, []string{"a-online-berlin", "c-online-paris", "e-online-nolabels"}},
		{"offline includes node-lost sessions", registry.ListQuery{Presence: registry.PresenceOffline}, []string{"b-offline-berlin", "d-lost-berlin"}},
		{"one label", registry.ListQuery{Labels: map[string]string{"site": "berlin"}}, []string{"a-online-berlin", "b-offline-berlin", "d-lost-berlin"}},
		{"all labels must match", registry.ListQuery{Labels: map[string]string{"site": "berlin", "tier": "edge"}}, []string{"a-online-berlin", "d-lost-berlin"}},
		{"labels and presence", registry.ListQuery{Presence: registry.PresenceOnline, Labels: map[string]string{"tier": "edge"}}, []string{"a-online-berlin", "c-online-paris"}},
		{"no match", registry.ListQuery{Labels: map[string]string{"site": "tokyo"}}, nil},
		{"filtered pages of one", registry.ListQuery{Limit: 1, Labels: map[string]string{"site": "berlin"}}, []string{"a-online-berlin", "b-offline-berlin", "d-lost-berlin"}},
	}
	for _, tc := range cases {
		if got, _ := listAll(t, st, tc.q); !slices.Equal(got, tc.want) {
			t.Errorf("%s: List = %v; want %v", tc.name, got, tc.want)
		}
	}
	page, err := st.List(ctxT(t), registry.ListQuery{Presence: registry.PresenceOffline})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range page.Records {
		if r.DeviceID == "d-lost-berlin" && (r.Session != nil || r.LastDisconnect == nil || r.LastDisconnect.Reason != rsNodeLost) {
			t.Fatalf("listed node-lost record: %s", describe(r))
		}
	}
}

func testListCap(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	alive(t, st, "n1")
	n := registry.MaxListLimit + 50
	live := make([]registry.Live, n)
	for i := range live {
		live[i] = registry.Live{DeviceID: fmt.Sprintf("dev-%05d", i), Lease: uint64(i + 1), Node: "n1", ConnectedAt: now(), LastSeen: now()}
	}
	if res, err := st.Remirror(ctxT(t), live); err != nil || len(res.Stale)+len(res.Unknown) != 0 {
		t.Fatalf("Remirror: %+v, %v", res, err)
	}
	page, err := st.List(ctxT(t), registry.ListQuery{Limit: 1_000_000})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Records) != registry.MaxListLimit || page.Next != page.Records[len(page.Records)-1].DeviceID {
		t.Fatalf("List(huge limit) = %d records, next %q; want %d and a next", len(page.Records), page.Next, registry.MaxListLimit)
	}
	got, _ := listAll(t, st, registry.ListQuery{Limit: 400})
	if len(got) != n || !slices.IsSorted(got) {
		t.Fatalf("listed %d devices (sorted %v); want %d", len(got), slices.IsSorted(got), n)
	}
}

func testReadEvents(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	if id := lastEvent(t, st); id != "" {
		t.Fatalf("LastEventID of an empty store = %q", id)
	}
	if evs, err := st.ReadEvents(ctxT(t), "", 10, 0); err != nil || len(evs) != 0 {
		t.Fatalf("ReadEvents on an empty store = %v, %v", evs, err)
	}
	alive(t, st, "n1")
	a := claim(t, st, "dev-a", "n1", "")
	b := claim(t, st, "dev-b", "n1", "")
	if err := st.Release(ctxT(t), "dev-a", registry.Disconnect{Lease: a.Lease, Reason: rsClosed, Time: now()}); err != nil {
		t.Fatal(err)
	}
	all := events(t, st, "")
	wantEvents(t, all,
		ev{evOnline, "dev-a", a.Lease, 0, "n1"},
		ev{evOnline, "dev-b", b.Lease, 0, "n1"},
		ev{evOffline, "dev-a", a.Lease, rsClosed, "n1"},
	)
	if last := lastEvent(t, st); last != all[2].ID {
		t.Fatalf("LastEventID = %q; want %q", last, all[2].ID)
	}
	two, err := st.ReadEvents(ctxT(t), "", 2, 0)
	if err != nil || len(two) != 2 || two[1].ID != all[1].ID {
		t.Fatalf("ReadEvents(limit 2) = %v, %v", two, err)
	}
	rest, err := st.ReadEvents(ctxT(t), two[1].ID, 10, 0)
	if err != nil || len(rest) != 1 || rest[0].ID != all[2].ID {
		t.Fatalf("ReadEvents after the second = %v, %v", rest, err)
	}
	if ids := []string{all[0].ID, all[1].ID, all[2].ID}; ids[0] == ids[1] || ids[1] == ids[2] {
		t.Fatalf("event ids are not distinct: %v", ids)
	}
}

func testReadEventsWaits(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	alive(t, st, "n1")
	mark := lastEvent(t, st)
	done := make(chan registry.Claimed, 1)
	go func() {
		time.Sleep(50 * time.Millisecond) // let the reader block first
		c, err := st.Claim(context.Background(), registry.ClaimRequest{DeviceID: "dev-a", Node: "n1", Now: now()})
		if err != nil {
			t.Error(err)
		}
		done <- c
	}()
	evs, err := st.ReadEvents(ctxT(t), mark, 10, time.Minute)
	c := <-done
	if err != nil || len(evs) == 0 || evs[0].DeviceID != "dev-a" || evs[0].Lease != c.Lease || evs[0].Type != evOnline {
		t.Fatalf("ReadEvents while waiting = %v, %v; want the claim's ONLINE", evs, err)
	}

	// A cancelled wait returns.
	ctx, cancel := context.WithCancel(ctxT(t))
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	after := lastEvent(t, st)
	if evs, err := st.ReadEvents(ctx, after, 10, time.Minute); err == nil && len(evs) != 0 {
		t.Fatalf("cancelled ReadEvents = %v, %v", evs, err)
	}
}

func testReadEventsTimeout(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	alive(t, st, "n1")
	claim(t, st, "dev-a", "n1", "")
	last := lastEvent(t, st)
	evs, err := st.ReadEvents(ctxT(t), last, 10, 100*time.Millisecond)
	if err != nil || len(evs) != 0 {
		t.Fatalf("ReadEvents with nothing new = %v, %v; want empty", evs, err)
	}
}

func testReadEventsTrimmed(t *testing.T, h Harness) {
	st := h.New(t, Options{EventRetention: 10})
	alive(t, st, "n1")
	c := claim(t, st, "dev-a", "n1", "")
	first := events(t, st, "")[0].ID
	trimmed := false
	for i := 0; i < 5000 && !trimmed; i++ {
		if err := st.UpdateInfo(ctxT(t), "dev-a", c.Lease, info(fmt.Sprint(i), nil)); err != nil {
			t.Fatal(err)
		}
		if i%50 == 49 {
			evs, err := st.ReadEvents(ctxT(t), "", 1, 0)
			if err != nil {
				t.Fatal(err)
			}
			trimmed = evs[0].ID != first
		}
	}
	if !trimmed {
		t.Fatal("no event was ever trimmed with EventRetention 10")
	}
	if _, err := st.ReadEvents(ctxT(t), first, 10, 0); !errors.Is(err, registry.ErrEventsExpired) {
		t.Fatalf("ReadEvents after a trimmed event: %v; want ErrEventsExpired", err)
	}
	if evs, err := st.ReadEvents(ctxT(t), "", 5, 0); err != nil || len(evs) != 5 {
		t.Fatalf("ReadEvents from the oldest retained = %d events, %v", len(evs), err)
	}
	if evs, err := st.ReadEvents(ctxT(t), lastEvent(t, st), 10, 0); err != nil || len(evs) != 0 {
		t.Fatalf("ReadEvents from the newest = %v, %v", evs, err)
	}
}

func testReadEventsFlushed(t *testing.T, h Harness) {
	if h.Flush == nil {
		t.Skip("harness cannot lose data")
	}
	st := h.New(t, Options{})
	alive(t, st, "n1")
	claim(t, st, "dev-a", "n1", "")
	old := lastEvent(t, st)
	st = h.Flush(t, st)
	if _, err := st.ReadEvents(ctxT(t), old, 10, 0); !errors.Is(err, registry.ErrEventsExpired) {
		t.Fatalf("resume after a lost event with no new ones: %v; want ErrEventsExpired", err)
	}
	alive(t, st, "n1")
	claim(t, st, "dev-b", "n1", "")
	if _, err := st.ReadEvents(ctxT(t), old, 10, 0); !errors.Is(err, registry.ErrEventsExpired) {
		t.Fatalf("resume after a lost event: %v; want ErrEventsExpired", err)
	}
	if evs := events(t, st, ""); len(evs) != 1 || evs[0].DeviceID != "dev-b" {
		t.Fatalf("events after the loss = %v", evs)
	}
}

func testLeasesAfterFlush(t *testing.T, h Harness) {
	if h.Flush == nil {
		t.Skip("harness cannot lose data")
	}
	st := h.New(t, Options{})
	alive(t, st, "n1")
	var held uint64
	for range 5 { // several claims in a row: highest+1 may exceed the clock
		held = claim(t, st, "dev-a", "n1", "").Lease
	}
	st = h.Flush(t, st)
	if _, err := st.Get(ctxT(t), "dev-a"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get after the loss: %v; want ErrNotFound", err)
	}
	alive(t, st, "n1")
	if c := claim(t, st, "dev-a", "n1", ""); c.Lease <= held {
		t.Fatalf("lease after the loss %d <= %d issued before it", c.Lease, held)
	}
}

func testRemirrorAfterFlush(t *testing.T, h Harness) {
	if h.Flush == nil {
		t.Skip("harness cannot lose data")
	}
	st := h.New(t, Options{})
	alive(t, st, "n1")
	at := now()
	a := claimReq(t, st, registry.ClaimRequest{DeviceID: "dev-a", Node: "n1", RemoteAddr: "192.0.2.1:1", Mode: modePong, Info: info("b1", map[string]string{"site": "x"}), Now: at})
	b := claim(t, st, "dev-b", "n1", "")
	st = h.Flush(t, st)
	alive(t, st, "n1")
	mark := lastEvent(t, st)
	// While the node re-mirrors, dev-b reconnected elsewhere with a new lease.
	nb := claim(t, st, "dev-b", "n1", "")
	live := []registry.Live{
		{DeviceID: "dev-a", Lease: a.Lease, Node: "n1", RemoteAddr: "192.0.2.1:1", Mode: modePong, Info: info("b1", map[string]string{"site": "x"}),
			ConnectedAt: at, LastSeen: at.Add(time.Second), RTT: time.Millisecond},
		{DeviceID: "dev-b", Lease: b.Lease, Node: "n1", ConnectedAt: at, LastSeen: at},
	}
	res, err := st.Remirror(ctxT(t), live)
	if err != nil {
		t.Fatal(err)
	}
	if stale := res.Stale; len(stale) != 1 || stale[0].DeviceID != "dev-b" || stale[0].Lease != b.Lease || len(res.Unknown) != 0 {
		t.Fatalf("Remirror = %+v; want dev-b's old lease stale", res)
	}
	r := get(t, st, "dev-a")
	s := r.Session
	if s == nil || s.Lease != a.Lease || s.Node != "n1" || s.RemoteAddr != "192.0.2.1:1" || !s.ConnectedAt.Equal(at) ||
		!s.LastSeen.Equal(at.Add(time.Second)) || s.RTT != time.Millisecond || s.Mode != modePong || r.Lease != a.Lease ||
		r.Info.GetLabels()["site"] != "x" {
		t.Fatalf("re-mirrored record: %s", describe(r))
	}
	if page, err := st.List(ctxT(t), registry.ListQuery{}); err != nil || !slices.Equal(ids(page.Records), []string{"dev-a", "dev-b"}) {
		t.Fatalf("List after Remirror = %v, %v", page.Records, err)
	}
	if r := get(t, st, "dev-b"); r.Session == nil || r.Session.Lease != nb.Lease {
		t.Fatalf("stale re-mirror overwrote the newer session: %s", describe(r))
	}
	wantEvents(t, events(t, st, mark),
		ev{evOnline, "dev-b", nb.Lease, 0, "n1"},
		ev{evOnline, "dev-a", a.Lease, 0, "n1"},
	)
	// The re-mirrored session is current again: its writes are accepted.
	if err := st.Release(ctxT(t), "dev-a", registry.Disconnect{Lease: a.Lease, Reason: rsClosed, Time: now()}); err != nil {
		t.Fatalf("Release of the re-mirrored session: %v", err)
	}
}

func testRemirrorStale(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	alive(t, st, "n1", "n2")
	old := claim(t, st, "dev-a", "n1", "")
	cur := claim(t, st, "dev-a", "n2", "")
	before := describe(get(t, st, "dev-a"))
	mark := lastEvent(t, st)
	res, err := st.Remirror(ctxT(t), []registry.Live{{DeviceID: "dev-a", Lease: old.Lease, Node: "n1", ConnectedAt: now()}})
	if stale := res.Stale; err != nil || len(stale) != 1 || stale[0].Lease != old.Lease {
		t.Fatalf("Remirror of a superseded lease: %+v, %v", res, err)
	}
	if got := describe(get(t, st, "dev-a")); got != before {
		t.Fatalf("refused re-mirror changed the record:\n was %s\n now %s", before, got)
	}
	// Re-asserting the current session is harmless and emits nothing.
	res, err = st.Remirror(ctxT(t), []registry.Live{{DeviceID: "dev-a", Lease: cur.Lease, Node: "n2", ConnectedAt: now()}})
	if err != nil || len(res.Stale)+len(res.Unknown) != 0 {
		t.Fatalf("Remirror of the current lease: %+v, %v", res, err)
	}
	if evs := events(t, st, mark); len(evs) != 0 {
		t.Fatalf("re-mirroring emitted %v", evs)
	}
	// A re-mirrored lease above the stored one raises the highest lease.
	high := cur.Lease + 1_000_000
	if res, err := st.Remirror(ctxT(t), []registry.Live{{DeviceID: "dev-a", Lease: high, Node: "n2", ConnectedAt: now()}}); err != nil || len(res.Stale)+len(res.Unknown) != 0 {
		t.Fatalf("Remirror(higher) = %+v, %v", res, err)
	}
	if r := get(t, st, "dev-a"); r.Lease != high {
		t.Fatalf("Record.Lease = %d; want %d", r.Lease, high)
	}
	if c := claim(t, st, "dev-a", "n1", ""); c.Lease <= high {
		t.Fatalf("claim after re-mirror of lease %d got %d", high, c.Lease)
	}
}

func testRetention(t *testing.T, h Harness) {
	const keep = 500 * time.Millisecond
	st := h.New(t, Options{DeviceRetention: keep})
	alive(t, st, "n1")
	c := claim(t, st, "dev-gone", "n1", "")
	if err := st.Release(ctxT(t), "dev-gone", registry.Disconnect{Lease: c.Lease, Reason: rsClosed, Time: now()}); err != nil {
		t.Fatal(err)
	}
	kept := claim(t, st, "dev-kept", "n1", "")
	eventually(t, "the released record expires", func() bool {
		// The live session keeps its record by being touched.
		if res, err := st.Touch(ctxT(t), []registry.Touch{{DeviceID: "dev-kept", Lease: kept.Lease, LastSeen: now()}}); err != nil || len(res.Stale)+len(res.Missing)+len(res.Unknown) != 0 {
			t.Fatalf("Touch: %+v, %v", res, err)
		}
		_, err := st.Get(ctxT(t), "dev-gone")
		return errors.Is(err, registry.ErrNotFound)
	})
	page, err := st.List(ctxT(t), registry.ListQuery{})
	if err != nil || !slices.Equal(ids(page.Records), []string{"dev-kept"}) {
		t.Fatalf("List after expiry = %v, %v; want only dev-kept", ids(page.Records), err)
	}
	// The device can come back; its lease is still above the forgotten one.
	if c2 := claim(t, st, "dev-gone", "n1", ""); c2.Lease <= c.Lease || c2.Replaced != nil {
		t.Fatalf("claim after expiry: %+v (old lease %d)", c2, c.Lease)
	}
}

func testConcurrentClaims(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	alive(t, st, "n1", "n2")
	const n = 16
	leases := make([]uint64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c, err := st.Claim(ctxT(t), registry.ClaimRequest{DeviceID: "dev-a", Node: []string{"n1", "n2"}[i%2], Now: now()})
			if err != nil {
				t.Error(err)
			}
			leases[i] = c.Lease
		})
	}
	wg.Wait()
	slices.Sort(leases)
	if len(slices.Compact(slices.Clone(leases))) != n {
		t.Fatalf("duplicate leases: %v", leases)
	}
	r := get(t, st, "dev-a")
	if r.Session == nil || r.Session.Lease != leases[n-1] || r.Lease != leases[n-1] {
		t.Fatalf("current session %s; want the highest lease %d", describe(r), leases[n-1])
	}
	for _, l := range leases[:n-1] {
		if err := st.UpdateInfo(ctxT(t), "dev-a", l, info("x", nil)); !errors.Is(err, registry.ErrStaleLease) {
			t.Fatalf("UpdateInfo with replaced lease %d: %v", l, err)
		}
	}
	replaced := 0
	for _, e := range events(t, st, "") {
		if e.Type == evReplaced {
			replaced++
		}
	}
	if replaced != n-1 {
		t.Fatalf("%d REPLACED events; want %d", replaced, n-1)
	}
}

func testReplicas(t *testing.T, h Harness) {
	if h.Replica == nil {
		t.Skip("harness has no replicas")
	}
	a := h.New(t, Options{})
	b := h.Replica(t, a)
	alive(t, a, "n1")
	alive(t, b, "n2")
	old := claim(t, a, "dev-a", "n1", "")
	cur := claim(t, b, "dev-a", "n2", "")
	if cur.Replaced == nil || cur.Replaced.Lease != old.Lease || cur.Replaced.Reason != rsReplaced {
		t.Fatalf("claim on replica b: %+v", cur)
	}
	if err := a.Release(ctxT(t), "dev-a", registry.Disconnect{Lease: old.Lease, Reason: rsClosed, Time: now()}); !errors.Is(err, registry.ErrStaleLease) {
		t.Fatalf("release of the replaced session on replica a: %v", err)
	}
	if r := get(t, a, "dev-a"); r.Session == nil || r.Session.Lease != cur.Lease || r.Session.Node != "n2" {
		t.Fatalf("replica a reads %s", describe(r))
	}
	if addr, err := a.NodeAddr(ctxT(t), "n2"); err != nil || addr != "n2.internal:7001" {
		t.Fatalf("replica a: NodeAddr(n2) = %q, %v", addr, err)
	}
	if ea, eb := lastEvent(t, a), lastEvent(t, b); ea != eb || ea == "" {
		t.Fatalf("replicas see different event logs: %q vs %q", ea, eb)
	}
}
