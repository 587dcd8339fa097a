package session_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/session"
)

func TestOversizedHelloInfoIsRefusedWithClearStatus(t *testing.T) {
	labels := map[string]string{}
	for i := range session.MaxInfoLabels + 1 {
		labels[fmt.Sprintf("k%d", i)] = "v"
	}
	for _, tc := range []struct {
		name string
		info *tetherv1.DeviceInfo
		want string
	}{
		{"too many labels", &tetherv1.DeviceInfo{Labels: labels}, "info.labels: 65 labels, at most 64"},
		{"long label value", &tetherv1.DeviceInfo{Labels: map[string]string{"k": strings.Repeat("x", 1<<20)}}, `info.labels["k"]: value of 1048576 bytes, at most 256`},
		{"long command usage", &tetherv1.DeviceInfo{Commands: []*tetherv1.CommandSpec{{Name: "x", Usage: strings.Repeat("u", 200)}}}, "info.commands[0].usage: 200 bytes, at most 128"},
		{"command without name", &tetherv1.DeviceInfo{Commands: []*tetherv1.CommandSpec{{}}}, "info.commands[0].name: 0 bytes, want 1 to 64"},
		{"too many commands", &tetherv1.DeviceInfo{Commands: make([]*tetherv1.CommandSpec, 65)}, "info.commands: 65 commands, at most 64"},
		{"long hostname", &tetherv1.DeviceInfo{Hostname: strings.Repeat("h", 300)}, "info.hostname: 300 bytes, at most 256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := startReplica(t, newStore(), testConfig("a"))
				d := dial(t, r)
				h := hello("dev-1", "b", true)
				h.GetHello().Info = tc.info
				if err := d.stream.Send(h); err != nil {
					t.Fatal(err)
				}
				_, err := d.stream.Recv()
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.want) {
					t.Fatalf("Recv error = %v, want InvalidArgument saying %q", err, tc.want)
				}
				if r.hub.Len() != 0 {
					t.Fatal("a refused Hello left a session behind")
				}
			})
		})
	}
}

func TestOversizedInfoUpdateEndsTheSessionAsProtocolError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newStore()
		r := startReplica(t, store, testConfig("a"))
		d := connect(t, r, "dev-1", "b", true)
		upd := &tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_InfoUpdate{InfoUpdate: &tetherv1.InfoUpdate{
			Info: &tetherv1.DeviceInfo{Hostname: "x", Labels: map[string]string{strings.Repeat("k", 200): "v"}}}}}
		if err := d.stream.Send(upd); err != nil {
			t.Fatal(err)
		}
		for {
			m, err := d.stream.Recv()
			if err != nil {
				t.Fatalf("stream ended without Close: %v", err)
			}
			if c := m.GetClose(); c != nil {
				if c.GetReason() != reasonProtocol || !strings.Contains(c.GetMessage(), "at most") {
					t.Fatalf("Close = %v", c)
				}
				break
			}
		}
		if rec := mustGet(t, store, "dev-1"); rec.Info.GetHostname() != "dev-1" {
			t.Fatalf("the refused info was stored: %v", rec.Info)
		}
	})
}

// TestInfoUpdatesAreRateLimitedAndTheNewestWins: a session that floods
// InfoUpdates gets InfoUpdateBurst of them written at once, then the newest
// of the rest when the rate allows; the registry ends with the latest info.
func TestInfoUpdatesAreRateLimitedAndTheNewestWins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newStore()
		r := startReplica(t, store, testConfig("a"))
		d := connect(t, r, "dev-1", "b", true)
		d.serve()
		before, _ := store.LastEventID(context.Background())
		const n = 200
		for i := range n {
			upd := &tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_InfoUpdate{InfoUpdate: &tetherv1.InfoUpdate{
				Info: &tetherv1.DeviceInfo{Hostname: fmt.Sprintf("h%d", i), BootId: "b"}}}}
			if err := d.stream.Send(upd); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(2 * session.InfoUpdateEvery)
		synctest.Wait()
		if got := mustGet(t, store, "dev-1").Info.GetHostname(); got != fmt.Sprintf("h%d", n-1) {
			t.Fatalf("hostname after the flood = %q, want the newest h%d", got, n-1)
		}
		evs, err := store.ReadEvents(context.Background(), before, 1000, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) > session.InfoUpdateBurst+1 {
			t.Fatalf("%d InfoUpdates made %d events; want at most %d", n, len(evs), session.InfoUpdateBurst+1)
		}
		t.Logf("%d InfoUpdates made %d events", n, len(evs))
	})
}
