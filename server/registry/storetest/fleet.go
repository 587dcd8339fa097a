package storetest

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
)

// RunFleet runs the contract of the fleet views (registry.History,
// registry.Lifecycle, registry.Fleet) against h. The harness's stores must
// implement all three.
func RunFleet(t *testing.T, h Harness) {
	tests := []contractTest{
		{"HistoryKeepsTheLastSessionsNewestFirst", testHistoryCapped},
		{"HistoryRecordsReplacedNodeLostAndOrphanedEnds", testHistoryEnds},
		{"HistoryEntryLearnsTheRestartVerdict", testHistoryVerdict},
		{"DeleteRefusesOnlineDevicesAndRemovesEverything", testDelete},
		{"PreRegisteredDevicesReadNeverConnectedUntilTheFirstClaim", testPreRegister},
		{"NeverConnectedRecordsExpireAfterTheirRetention", testNeverConnectedRetention},
		{"InventoryCountsEveryDeviceOnce", testInventory},
		{"NodesListsRenewedNodesWithSessionCounts", testNodes},
	}
	runTests(t, h, tests)
}

type fleetStore interface {
	registry.Store
	registry.History
	registry.Lifecycle
	registry.Fleet
}

func newFleet(t *testing.T, h Harness, opts Options) fleetStore {
	t.Helper()
	st, ok := h.New(t, opts).(fleetStore)
	if !ok {
		t.Fatal("the store does not implement History, Lifecycle and Fleet")
	}
	return st
}

func history(t *testing.T, st fleetStore, id string) []registry.SessionEnd {
	t.Helper()
	hs, err := st.History(ctxT(t), id, 0)
	if err != nil {
		t.Fatalf("History(%s): %v", id, err)
	}
	return hs
}

func release(t *testing.T, st registry.Store, id string, lease uint64, reason tetherv1.DisconnectReason) {
	t.Helper()
	if err := st.Release(ctxT(t), id, registry.Disconnect{Lease: lease, Reason: reason, Time: now(), Message: "bye"}); err != nil {
		t.Fatalf("Release(%s, %d): %v", id, lease, err)
	}
}

func testHistoryCapped(t *testing.T, h Harness) {
	st := newFleet(t, h, Options{HistoryLen: 3})
	alive(t, st, "n1")
	var leases []uint64
	var connected []time.Time
	for i := range 5 {
		req := registry.ClaimRequest{DeviceID: "dev-h", Node: "n1", RemoteAddr: "192.0.2.1:5000", Mode: modePong, Info: info("boot", nil), Now: now()}
		c := claimReq(t, st, req)
		if _, err := st.Touch(ctxT(t), []registry.Touch{{DeviceID: "dev-h", Lease: c.Lease, LastSeen: now(), RTT: time.Duration(i+1) * time.Millisecond}}); err != nil {
			t.Fatal(err)
		}
		release(t, st, "dev-h", c.Lease, rsPing)
		leases = append(leases, c.Lease)
		connected = append(connected, req.Now)
	}
	hs := history(t, st, "dev-h")
	if len(hs) != 3 {
		t.Fatalf("history has %d entries, want 3 (HistoryLen): %+v", len(hs), hs)
	}
	for i, e := range hs {
		j := 4 - i
		if e.Lease != leases[j] || e.Node != "n1" || e.Reason != rsPing || !e.ConnectedAt.Equal(connected[j]) ||
			e.RTT != time.Duration(j+1)*time.Millisecond || e.EndedAt.IsZero() || e.Message != "bye" {
			t.Fatalf("entry %d = %+v, want lease %d connected %v rtt %dms", i, e, leases[j], connected[j], j+1)
		}
	}
	if hs, err := st.History(ctxT(t), "dev-h", 1); err != nil || len(hs) != 1 || hs[0].Lease != leases[4] {
		t.Fatalf("History(limit 1) = %+v, %v", hs, err)
	}
	if hs := history(t, st, "dev-unknown"); len(hs) != 0 {
		t.Fatalf("history of an unknown device = %+v", hs)
	}
}

func testHistoryEnds(t *testing.T, h Harness) {
	st := newFleet(t, h, Options{})
	alive(t, st, "n1", "n2")
	c1 := claim(t, st, "dev-e", "n1", "b")
	c2 := claim(t, st, "dev-e", "n2", "b") // replaces c1
	if err := st.DropNode(ctxT(t), "n2"); err != nil {
		t.Fatal(err)
	}
	c3 := claim(t, st, "dev-e", "n1", "b") // c2's node is dead: NODE_LOST
	rec, err := st.Reconcile(ctxT(t), "n1", nil, func(string, uint64) bool { return true })
	if err != nil || len(rec.Orphaned) != 1 {
		t.Fatalf("Reconcile = %+v, %v; want c3 orphaned", rec, err)
	}
	hs := history(t, st, "dev-e")
	want := []struct {
		lease  uint64
		node   string
		reason tetherv1.DisconnectReason
	}{{c3.Lease, "n1", tetherv1.DisconnectReason_DISCONNECT_REASON_ORPHANED}, {c2.Lease, "n2", rsNodeLost}, {c1.Lease, "n1", rsReplaced}}
	if len(hs) != len(want) {
		t.Fatalf("history = %+v, want %d entries", hs, len(want))
	}
	for i, w := range want {
		if hs[i].Lease != w.lease || hs[i].Node != w.node || hs[i].Reason != w.reason {
			t.Fatalf("entry %d = %+v, want %+v", i, hs[i], w)
		}
	}
	// The claims that ended c1 and c2 knew the verdict (same boot id).
	if hs[1].Restart != rtSameBoot || hs[2].Restart != rtSameBoot {
		t.Fatalf("verdicts = %v, %v; want SAME_BOOT", hs[1].Restart, hs[2].Restart)
	}
}

func testHistoryVerdict(t *testing.T, h Harness) {
	st := newFleet(t, h, Options{})
	alive(t, st, "n1")
	c := claim(t, st, "dev-v", "n1", "boot-1")
	release(t, st, "dev-v", c.Lease, rsPing)
	if hs := history(t, st, "dev-v"); len(hs) != 1 || hs[0].Restart != rtUnknown {
		t.Fatalf("before the next Hello: %+v", hs)
	}
	claim(t, st, "dev-v", "n1", "boot-2")
	if hs := history(t, st, "dev-v"); len(hs) != 1 || hs[0].Lease != c.Lease || hs[0].Restart != rtRestarted {
		t.Fatalf("after a Hello with a new boot id: %+v", hs)
	}
}

func testDelete(t *testing.T, h Harness) {
	st := newFleet(t, h, Options{})
	alive(t, st, "n1", "n2")
	c := claim(t, st, "dev-d", "n1", "")
	if err := st.Delete(ctxT(t), "dev-d"); !errors.Is(err, registry.ErrOnline) {
		t.Fatalf("Delete of an online device = %v, want ErrOnline", err)
	}
	release(t, st, "dev-d", c.Lease, rsClosed)
	before := lastEvent(t, st)
	if err := st.Delete(ctxT(t), "dev-d"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if evs := events(t, st, before); len(evs) != 1 || evs[0].Type != tetherv1.EventType_EVENT_TYPE_DELETED || evs[0].DeviceID != "dev-d" {
		t.Fatalf("events after Delete = %+v, want one DELETED", evs)
	}
	if _, err := st.Get(ctxT(t), "dev-d"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get after Delete = %v", err)
	}
	if hs := history(t, st, "dev-d"); len(hs) != 0 {
		t.Fatalf("history after Delete = %+v", hs)
	}
	if err := st.Delete(ctxT(t), "dev-d"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("second Delete = %v, want ErrNotFound", err)
	}
	// A session on a dead node reads offline: it may be deleted.
	claim(t, st, "dev-lost", "n2", "")
	if err := st.DropNode(ctxT(t), "n2"); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctxT(t), "dev-lost"); err != nil {
		t.Fatalf("Delete of a device on a dead node: %v", err)
	}
	page, err := st.List(ctxT(t), registry.ListQuery{})
	if err != nil || len(page.Records) != 0 {
		t.Fatalf("List after deletes = %v, %v", ids(page.Records), err)
	}
	// The device can come back; like after expiry, its lease comes from
	// the clock and is still above the deleted one.
	time.Sleep(time.Millisecond)
	if c2 := claim(t, st, "dev-d", "n1", ""); c2.Lease <= c.Lease {
		t.Fatalf("claim after delete: lease %d, old %d", c2.Lease, c.Lease)
	}
}

func testPreRegister(t *testing.T, h Harness) {
	st := newFleet(t, h, Options{})
	alive(t, st, "n1")
	labels := map[string]string{"site": "lobby", "role": "kiosk"}
	before := lastEvent(t, st)
	r, err := st.PreRegister(ctxT(t), "dev-p", labels, now())
	if err != nil || !r.NeverConnected() {
		t.Fatalf("PreRegister = %+v, %v", r, err)
	}
	if evs := events(t, st, before); len(evs) != 1 || evs[0].Type != tetherv1.EventType_EVENT_TYPE_REGISTERED || evs[0].DeviceID != "dev-p" {
		t.Fatalf("events after PreRegister = %+v, want one REGISTERED", evs)
	}
	got := get(t, st, "dev-p")
	if !got.NeverConnected() || got.Online() || got.Lease != 0 || got.LastDisconnect != nil || !maps.Equal(got.Info.GetLabels(), labels) {
		t.Fatalf("pre-registered record = %s, labels %v", describe(got), got.Info.GetLabels())
	}
	if _, err := st.PreRegister(ctxT(t), "dev-p", nil, now()); !errors.Is(err, registry.ErrExists) {
		t.Fatalf("second PreRegister = %v, want ErrExists", err)
	}
	if ids, _ := listAll(t, st, registry.ListQuery{Labels: map[string]string{"site": "lobby"}}); !slices.Equal(ids, []string{"dev-p"}) {
		t.Fatalf("List by a pre-registered label = %v", ids)
	}
	if ids, _ := listAll(t, st, registry.ListQuery{Presence: registry.PresenceOffline}); !slices.Equal(ids, []string{"dev-p"}) {
		t.Fatalf("List offline = %v (never connected is offline)", ids)
	}
	c := claimReq(t, st, registry.ClaimRequest{DeviceID: "dev-p", Node: "n1", Mode: modePong, Now: now(),
		Info: info("b", map[string]string{"role": "agent-wins", "hw": "pi"})})
	if c.Replaced != nil {
		t.Fatalf("the first claim replaced %+v", c.Replaced)
	}
	got = get(t, st, "dev-p")
	want := map[string]string{"site": "lobby", "role": "agent-wins", "hw": "pi"}
	if got.NeverConnected() || !got.Online() || got.Lease != c.Lease || got.FirstSeen.IsZero() || !maps.Equal(got.Info.GetLabels(), want) {
		t.Fatalf("after the first claim: %s labels %v, want labels %v", describe(got), got.Info.GetLabels(), want)
	}
	if _, err := st.PreRegister(ctxT(t), "dev-p", nil, now()); !errors.Is(err, registry.ErrExists) {
		t.Fatalf("PreRegister of a connected device = %v, want ErrExists", err)
	}
}

func testNeverConnectedRetention(t *testing.T, h Harness) {
	st := newFleet(t, h, Options{NeverConnectedRetention: 300 * time.Millisecond, DeviceRetention: time.Hour})
	if _, err := st.PreRegister(ctxT(t), "dev-n", nil, now()); err != nil {
		t.Fatal(err)
	}
	alive(t, st, "n1")
	c := claim(t, st, "dev-c", "n1", "")
	release(t, st, "dev-c", c.Lease, rsClosed)
	eventually(t, "the never-connected record expires", func() bool {
		_, err := st.Get(ctxT(t), "dev-n")
		return errors.Is(err, registry.ErrNotFound)
	})
	get(t, st, "dev-c") // offline records keep the (longer) offline retention
}

func testInventory(t *testing.T, h Harness) {
	st := newFleet(t, h, Options{})
	alive(t, st, "n1", "n2")
	for i, v := range []string{"1.0", "1.0", "1.1"} {
		in := info("", map[string]string{"site": fmt.Sprint("s", i%2)})
		in.AgentVersion = v
		node := "n1"
		if i == 2 {
			node = "n2"
		}
		claimReq(t, st, registry.ClaimRequest{DeviceID: fmt.Sprint("dev-", i), Node: node, Mode: modePong, Info: in, Now: now()})
	}
	c := claim(t, st, "dev-off", "n1", "")
	release(t, st, "dev-off", c.Lease, rsClosed)
	if _, err := st.PreRegister(ctxT(t), "dev-pre", map[string]string{"site": "s0"}, now()); err != nil {
		t.Fatal(err)
	}
	inv, err := st.Inventory(ctxT(t), "site")
	if err != nil {
		t.Fatal(err)
	}
	if inv.Total != 5 || inv.Online != 3 || inv.Offline != 1 || inv.NeverConnected != 1 {
		t.Fatalf("inventory = %+v", inv)
	}
	eq := func(name string, got, want map[string]int) {
		if !maps.Equal(got, want) {
			t.Fatalf("%s = %v, want %v", name, got, want)
		}
	}
	eq("by version", inv.ByAgentVersion, map[string]int{"1.0": 2, "1.1": 1, registry.NoneBucket: 2})
	eq("by os", inv.ByOS, map[string]int{"linux": 4, registry.NoneBucket: 1})
	eq("by node", inv.ByNode, map[string]int{"n1": 2, "n2": 1})
	eq("by site", inv.ByLabel, map[string]int{"s0": 3, "s1": 1, registry.NoneBucket: 1})
	// A dead node's sessions count as offline.
	if err := st.DropNode(ctxT(t), "n2"); err != nil {
		t.Fatal(err)
	}
	if inv, err := st.Inventory(ctxT(t), ""); err != nil || inv.Online != 2 || inv.Offline != 2 || len(inv.ByLabel) != 0 {
		t.Fatalf("after n2 died: %+v, %v", inv, err)
	}
}

func testNodes(t *testing.T, h Harness) {
	st := newFleet(t, h, Options{})
	alive(t, st, "n1", "n2")
	claim(t, st, "dev-a", "n1", "")
	claim(t, st, "dev-b", "n1", "")
	if err := st.DropNode(ctxT(t), "n2"); err != nil {
		t.Fatal(err)
	}
	ns, err := st.Nodes(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(ns) != 2 || ns[0].Name != "n1" || !ns[0].Alive || ns[0].Addr != "n1.internal:7001" || ns[0].Sessions != 2 || ns[0].LastRenewed.IsZero() ||
		ns[1].Name != "n2" || ns[1].Alive || ns[1].Sessions != 0 {
		t.Fatalf("nodes = %+v", ns)
	}
}
