package deviceapi_test

import (
	"context"
	"maps"
	"strings"
	"testing"
	"testing/synctest"

	"google.golang.org/grpc/codes"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/session"
)

func TestDeleteDeviceRefusesOnlineDevicesUnlessForced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, session.Config{})
		ctx := context.Background()
		lease, _ := f.runAgent(t, "d1", agentBehaviour{}, nil)
		_, err := f.api.DeleteDevice(ctx, &tetherv1.DeleteDeviceRequest{DeviceId: "d1"})
		if code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "force") {
			t.Fatalf("delete of an online device = %v, want FAILED_PRECONDITION", err)
		}
		resp, err := f.api.DeleteDevice(ctx, &tetherv1.DeleteDeviceRequest{DeviceId: "d1", Force: true})
		if err != nil || resp.GetEndedLeaseId() != lease {
			t.Fatalf("forced delete = %v, %v; want the session %d ended", resp, err, lease)
		}
		if _, err := f.api.GetDevice(ctx, &tetherv1.GetDeviceRequest{DeviceId: "d1"}); code(err) != codes.NotFound {
			t.Fatalf("get after delete = %v", err)
		}
		if h, err := f.api.GetDeviceHistory(ctx, &tetherv1.GetDeviceHistoryRequest{DeviceId: "d1"}); err != nil || len(h.GetSessions()) != 0 {
			t.Fatalf("history after delete = %v, %v", h, err)
		}
		if _, err := f.api.DeleteDevice(ctx, &tetherv1.DeleteDeviceRequest{DeviceId: "d1"}); code(err) != codes.NotFound {
			t.Fatalf("second delete = %v, want NOT_FOUND", err)
		}
		if _, err := f.api.DeleteDevice(ctx, &tetherv1.DeleteDeviceRequest{DeviceId: "no/such"}); code(err) != codes.InvalidArgument {
			t.Fatalf("delete of a bad id = %v", err)
		}
	})
}

func TestHistoryShowsEndedSessionsNewestFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, session.Config{})
		ctx := context.Background()
		first, _ := f.runAgent(t, "d1", agentBehaviour{}, nil)
		if _, err := f.api.DisconnectDevice(ctx, &tetherv1.DisconnectDeviceRequest{DeviceId: "d1"}); err != nil {
			t.Fatal(err)
		}
		second, _ := f.runAgent(t, "d1", agentBehaviour{}, nil)
		if _, err := f.api.DisconnectDevice(ctx, &tetherv1.DisconnectDeviceRequest{DeviceId: "d1"}); err != nil {
			t.Fatal(err)
		}
		h, err := f.api.GetDeviceHistory(ctx, &tetherv1.GetDeviceHistoryRequest{DeviceId: "d1"})
		if err != nil {
			t.Fatal(err)
		}
		s := h.GetSessions()
		if len(s) != 2 || s[0].GetLeaseId() != second || s[1].GetLeaseId() != first ||
			s[0].GetReason() != tetherv1.DisconnectReason_DISCONNECT_REASON_KICKED || s[0].GetNode() != "n1" ||
			s[0].GetConnectedAt() == nil || s[0].GetEndedAt() == nil {
			t.Fatalf("history = %v", s)
		}
		if h, err := f.api.GetDeviceHistory(ctx, &tetherv1.GetDeviceHistoryRequest{DeviceId: "d1", PageSize: 1}); err != nil || len(h.GetSessions()) != 1 {
			t.Fatalf("history page_size 1 = %v, %v", h, err)
		}
		if _, err := f.api.GetDeviceHistory(ctx, &tetherv1.GetDeviceHistoryRequest{DeviceId: "d1", PageSize: -1}); code(err) != codes.InvalidArgument {
			t.Fatalf("negative page size = %v", err)
		}
	})
}

func TestPreRegisteredDeviceIsNeverConnectedUntilItsAgentComes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, session.Config{})
		ctx := context.Background()
		resp, err := f.api.PreRegisterDevice(ctx, &tetherv1.PreRegisterDeviceRequest{DeviceId: "kiosk-1", Labels: map[string]string{"site": "lobby", "role": "kiosk"}})
		if err != nil || resp.GetDevice().GetState() != tetherv1.DeviceState_DEVICE_STATE_NEVER_CONNECTED || resp.GetDevice().GetOnline() {
			t.Fatalf("pre-register = %v, %v", resp, err)
		}
		if _, err := f.api.PreRegisterDevice(ctx, &tetherv1.PreRegisterDeviceRequest{DeviceId: "kiosk-1"}); code(err) != codes.AlreadyExists {
			t.Fatalf("second pre-register = %v, want ALREADY_EXISTS", err)
		}
		big := map[string]string{"k": strings.Repeat("v", 300)}
		if _, err := f.api.PreRegisterDevice(ctx, &tetherv1.PreRegisterDeviceRequest{DeviceId: "kiosk-2", Labels: big}); code(err) != codes.InvalidArgument {
			t.Fatalf("oversized label = %v, want INVALID_ARGUMENT", err)
		}
		list, err := f.api.ListDevices(ctx, &tetherv1.ListDevicesRequest{LabelSelector: "site=lobby"})
		if err != nil || len(list.GetDevices()) != 1 || list.GetDevices()[0].GetState() != tetherv1.DeviceState_DEVICE_STATE_NEVER_CONNECTED {
			t.Fatalf("list by label = %v, %v", list, err)
		}
		f.runAgent(t, "kiosk-1", agentBehaviour{}, map[string]string{"role": "agent"})
		got, err := f.api.GetDevice(ctx, &tetherv1.GetDeviceRequest{DeviceId: "kiosk-1"})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"site": "lobby", "role": "agent"}
		if d := got.GetDevice(); d.GetState() != tetherv1.DeviceState_DEVICE_STATE_ONLINE || !maps.Equal(d.GetInfo().GetLabels(), want) || d.GetFirstSeen() == nil {
			t.Fatalf("after the first Hello: %v; want online with labels %v", d, want)
		}
	})
}

func TestInventoryAndNodes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, session.Config{})
		ctx := context.Background()
		f.runAgent(t, "a1", agentBehaviour{}, map[string]string{"site": "x"})
		f.runAgent(t, "a2", agentBehaviour{}, map[string]string{"site": "y"})
		if _, err := f.api.PreRegisterDevice(ctx, &tetherv1.PreRegisterDeviceRequest{DeviceId: "p1", Labels: map[string]string{"site": "x"}}); err != nil {
			t.Fatal(err)
		}
		inv, err := f.api.GetInventory(ctx, &tetherv1.GetInventoryRequest{LabelKey: "site"})
		if err != nil {
			t.Fatal(err)
		}
		if inv.GetTotal() != 3 || inv.GetOnline() != 2 || inv.GetNeverConnected() != 1 || inv.GetOffline() != 0 {
			t.Fatalf("inventory = %v", inv)
		}
		if b := inv.GetByLabel(); len(b) != 2 || b[0].GetValue() != "x" || b[0].GetCount() != 2 || b[1].GetValue() != "y" {
			t.Fatalf("by site = %v", b)
		}
		if b := inv.GetByNode(); len(b) != 1 || b[0].GetValue() != "n1" || b[0].GetCount() != 2 {
			t.Fatalf("by node = %v", b)
		}
		if _, err := f.api.GetInventory(ctx, &tetherv1.GetInventoryRequest{LabelKey: strings.Repeat("k", 200)}); code(err) != codes.InvalidArgument {
			t.Fatalf("long label key = %v", err)
		}
		nodes, err := f.api.ListNodes(ctx, &tetherv1.ListNodesRequest{})
		if err != nil || len(nodes.GetNodes()) != 1 || !nodes.GetNodes()[0].GetAlive() || nodes.GetNodes()[0].GetSessions() != 2 {
			t.Fatalf("nodes = %v, %v", nodes, err)
		}
	})
}
