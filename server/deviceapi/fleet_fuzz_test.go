package deviceapi_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/deviceapi"
	"github.com/tetherhq/tether/server/metrics"
	"github.com/tetherhq/tether/server/registry/memstore"
	"github.com/tetherhq/tether/server/session"
)

// FuzzFleetRequests: the fleet calls (pre-register, history, inventory,
// delete) never panic on any input and answer only their documented codes;
// an accepted pre-registration reads back as never connected with exactly
// its labels.
func FuzzFleetRequests(f *testing.F) {
	for _, seed := range []struct {
		id, labels, key string
		size            int32
		force           bool
	}{
		{"kiosk-1", "site=lobby,role=kiosk", "site", 0, false},
		{"", "", "", -1, true},
		{"a/b", "=v", strings.Repeat("k", 200), 1 << 30, false},
		{strings.Repeat("d", 65), "k=" + strings.Repeat("v", 300), "\xff", 5, true},
		{"dev.1_x-y", "\xff=\xfe", "(none)", 100, false},
	} {
		f.Add(seed.id, seed.labels, seed.key, seed.size, seed.force)
	}
	store := memstore.New(memstore.Options{})
	f.Cleanup(func() { _ = store.Close() })
	hub, err := session.NewHub(session.Config{Node: "n1"}, store, metrics.New(nil))
	if err != nil {
		f.Fatal(err)
	}
	svc := deviceapi.New(deviceapi.Config{}, store, hub, metrics.New(nil))
	f.Cleanup(svc.Close)
	f.Fuzz(func(t *testing.T, id, joined, key string, size int32, force bool) {
		ctx := context.Background()
		labels := map[string]string{}
		for _, kv := range strings.Split(joined, ",") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				labels[k] = v
			}
		}
		want := func(op string, err error, codes_ ...codes.Code) {
			c := status.Code(err)
			for _, w := range codes_ {
				if c == w {
					return
				}
			}
			t.Fatalf("%s: %v (code %v), want one of %v", op, err, c, codes_)
		}
		resp, err := svc.PreRegisterDevice(ctx, &tetherv1.PreRegisterDeviceRequest{DeviceId: id, Labels: labels})
		want("PreRegisterDevice", err, codes.OK, codes.InvalidArgument, codes.AlreadyExists)
		if err == nil {
			d := resp.GetDevice()
			if d.GetState() != tetherv1.DeviceState_DEVICE_STATE_NEVER_CONNECTED || len(d.GetInfo().GetLabels()) != len(labels) {
				t.Fatalf("pre-registered %q: %v", id, d)
			}
		}
		_, err = svc.GetDeviceHistory(ctx, &tetherv1.GetDeviceHistoryRequest{DeviceId: id, PageSize: size})
		want("GetDeviceHistory", err, codes.OK, codes.InvalidArgument)
		_, err = svc.GetInventory(ctx, &tetherv1.GetInventoryRequest{LabelKey: key})
		want("GetInventory", err, codes.OK, codes.InvalidArgument)
		_, err = svc.DeleteDevice(ctx, &tetherv1.DeleteDeviceRequest{DeviceId: id, Force: force})
		want("DeleteDevice", err, codes.OK, codes.InvalidArgument, codes.NotFound)
	})
}
