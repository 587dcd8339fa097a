package session_test

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/access"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/registry/memstore"
	"github.com/tetherhq/tether/server/session"
)

// TestAFlappingDeviceIsCooledDown: two agents with one device id take the
// session from each other; past the limit, the id's Hellos are refused with
// Close(FLAPPING, retry_after) and RESOURCE_EXHAUSTED, nothing is claimed,
// and after the cooldown the device is admitted again.
func TestAFlappingDeviceIsCooledDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newStore()
		cfg := testConfig("n1")
		cfg.FlapLimit, cfg.FlapCooldown = 3, 30*time.Second
		r := startReplica(t, store, cfg)
		connect(t, r, "twin", "b", true)
		for i := range cfg.FlapLimit + 1 { // takeovers 1..limit+1: the last starts the cooldown
			connect(t, r, "twin", fmt.Sprint("b", i), true)
		}
		lease := mustGet(t, store, "twin").Lease

		d := dial(t, r)
		if err := d.stream.Send(hello("twin", "x", true)); err != nil {
			t.Fatal(err)
		}
		m, err := d.stream.Recv()
		if err != nil {
			t.Fatalf("want Close(FLAPPING) first, got %v", err)
		}
		c := m.GetClose()
		if c.GetReason() != tetherv1.DisconnectReason_DISCONNECT_REASON_FLAPPING || c.GetRetryAfter().AsDuration() <= 0 || c.GetRetryAfter().AsDuration() > 30*time.Second {
			t.Fatalf("first message = %v; want Close(FLAPPING) with 0 < retry_after <= 30s", m)
		}
		if _, err := d.stream.Recv(); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("stream ended with %v; want RESOURCE_EXHAUSTED", err)
		}
		if got := mustGet(t, store, "twin").Lease; got != lease {
			t.Fatalf("a refused Hello claimed lease %d (was %d)", got, lease)
		}
		// Other devices are not affected.
		connect(t, r, "bystander", "b", true)

		time.Sleep(31 * time.Second)
		connect(t, r, "twin", "y", true)
	})
}

// TestHelloMustNameTheAuthenticatedDevice: a stream authenticated as one
// device cannot Hello as another; nothing is written.
func TestHelloMustNameTheAuthenticatedDevice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newStore()
		r := startReplicaAs(t, store, testConfig("n1"), access.Device{ID: "dev-a", TokenID: "tok1"})
		d := dial(t, r)
		if err := d.stream.Send(hello("dev-b", "b", true)); err != nil {
			t.Fatal(err)
		}
		if _, err := d.stream.Recv(); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("Hello as dev-b with dev-a's credentials: %v; want PERMISSION_DENIED", err)
		}
		if _, err := store.Get(context.Background(), "dev-b"); err == nil {
			t.Fatal("dev-b was claimed")
		}
		a := connect(t, r, "dev-a", "b", true)
		if r.hub.Lookup("dev-a").TokenID != "tok1" {
			t.Fatal("session does not remember its token id")
		}
		_ = a
	})
}

// TestRevokingATokenEndsItsSession: the revocation loop ends the live
// session of a revoked token with Close(AUTH_REVOKED) within one poll.
func TestRevokingATokenEndsItsSession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := memstore.New(memstore.Options{})
		cfg := testConfig("n1")
		r := startReplicaAs(t, store, cfg, access.Device{ID: "dev-a", TokenID: "tok1", Expiry: time.Now().Add(time.Hour)})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go r.hub.WatchRevocations(ctx, store)
		d := connect(t, r, "dev-a", "b", true)
		time.Sleep(2 * time.Second) // the loop has checked the new session

		if err := store.Revoke(context.Background(), "tok1", time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		revokedAt := time.Now()
		for {
			m, err := d.stream.Recv()
			if err != nil {
				t.Fatalf("stream ended without Close: %v", err)
			}
			if c := m.GetClose(); c != nil {
				if c.GetReason() != tetherv1.DisconnectReason_DISCONNECT_REASON_AUTH_REVOKED {
					t.Fatalf("Close reason %v; want AUTH_REVOKED", c.GetReason())
				}
				break
			}
		}
		// Fake time: this is the poll bound exactly, not a wall-clock guess.
		if took := time.Since(revokedAt); took > time.Second {
			t.Fatalf("session ended %v after the revocation; want within a second", took)
		}
		synctest.Wait()
		if rec := mustGet(t, store, "dev-a"); rec.Online() || rec.LastDisconnect.Reason != tetherv1.DisconnectReason_DISCONNECT_REASON_AUTH_REVOKED {
			t.Fatalf("record after revocation: online=%v last=%+v", rec.Online(), rec.LastDisconnect)
		}
	})
}

// startReplicaAs is startReplica with every stream authenticated as dev
// (what the access interceptor does on a real server).
func startReplicaAs(t *testing.T, store registry.Store, cfg session.Config, dev access.Device) *replica {
	t.Helper()
	return startReplicaWith(t, store, cfg, grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return h(srv, &authedStream{ServerStream: ss, ctx: access.WithDevice(ss.Context(), dev)})
	}))
}

type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *authedStream) Context() context.Context { return s.ctx }

// A session ends when its device token expires, not only when it is
// revoked: the credentials stop being accepted at that moment.
func TestAnExpiringTokenEndsItsSession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := memstore.New(memstore.Options{})
		cfg := testConfig("n1")
		expiry := time.Now().Add(90 * time.Second)
		r := startReplicaAs(t, store, cfg, access.Device{ID: "dev-a", TokenID: "tok1", Expiry: expiry})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go r.hub.WatchRevocations(ctx, store)
		d := connect(t, r, "dev-a", "b", true)
		for {
			m, err := d.stream.Recv()
			if err != nil {
				t.Fatalf("stream ended without Close: %v", err)
			}
			if m.GetPing() != nil {
				_ = d.stream.Send(&tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_Pong{Pong: &tetherv1.Pong{Seq: m.GetPing().GetSeq()}}})
			}
			if c := m.GetClose(); c != nil {
				if c.GetReason() != tetherv1.DisconnectReason_DISCONNECT_REASON_AUTH_FAILED {
					t.Fatalf("Close reason %v; want AUTH_FAILED (token expired)", c.GetReason())
				}
				break
			}
		}
		if now := time.Now(); now.Before(expiry) || now.Sub(expiry) > cfg.WithDefaults().RevocationPoll {
			t.Fatalf("session ended at %v; want within one poll after the expiry %v", now, expiry)
		}
	})
}
