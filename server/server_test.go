package server_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/test/bufconn"

	"github.com/tetherhq/tether/agent"
	"github.com/tetherhq/tether/server"
	"github.com/tetherhq/tether/server/registry/memstore"
)

// TestShippedKeepaliveDefaultsNeverEarnTooManyPings runs the real agent
// against the real server configuration (keepalive parameters and
// enforcement policy exactly as shipped) for an hour of fake time. A
// too_many_pings GOAWAY would close the connection and make the agent
// reconnect with a new lease; it must keep its first session throughout.
func TestShippedKeepaliveDefaultsNeverEarnTooManyPings(t *testing.T) {
	for _, tc := range []struct {
		name         string
		legacy       bool
		pingInterval time.Duration
	}{
		{"app-pong agent", false, 0},
		{"legacy agent", true, 0},
		// With a ping interval above the agent's 20s keepalive time, the
		// server's own keepalive no longer keeps the transport busy, so an
		// idle legacy agent sends HTTP/2 pings of its own: exactly the case
		// the enforcement policy must tolerate.
		{"legacy agent, 60s ping interval (agent keepalive pings on the wire)", true, 60 * time.Second},
	} {
		legacy := tc.legacy
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
				lis := bufconn.Listen(1 << 20)
				ctx, cancel := context.WithCancel(context.Background())
				cfg := server.Config{Listener: lis, Store: memstore.New(memstore.Options{}), Logger: quiet}
				cfg.Session.PingInterval = tc.pingInterval
				if tc.pingInterval > 0 {
					cfg.Session.PingTimeout = 20 * time.Second
				}
				srv, err := server.New(ctx, cfg)
				if err != nil {
					t.Fatal(err)
				}
				served := make(chan error, 1)
				go func() { served <- srv.Run(ctx) }()

				var sessions atomic.Int32
				a, err := agent.New(agent.Config{
					ServerAddr: "passthrough:///bufnet", DeviceID: "ka-1", LegacyNoPong: legacy, Logger: quiet,
					DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
						return lis.DialContext(ctx)
					})},
					OnSession: func(uint64) { sessions.Add(1) },
				})
				if err != nil {
					t.Fatal(err)
				}
				agentDone := make(chan error, 1)
				go func() { agentDone <- a.Run(ctx) }()

				time.Sleep(time.Hour)
				synctest.Wait()
				n := sessions.Load()
				rec, getErr := srv.Store().Get(context.Background(), "ka-1")
				cancel()
				<-agentDone
				if err := <-served; err != nil {
					t.Fatal(err)
				}
				if n != 1 {
					t.Fatalf("the agent opened %d sessions in an hour, want exactly 1 (a GOAWAY or a timeout closed it)", n)
				}
				if getErr != nil || !rec.Online() {
					t.Fatalf("device after an hour: %+v %v", rec, getErr)
				}
			})
		})
	}
}

// A device retention shorter than the mirror interval would let live
// devices' records expire between two mirror writes: refused at start.
func TestDeviceRetentionBelowTheMirrorIntervalIsRefused(t *testing.T) {
	_, err := server.New(context.Background(), server.Config{
		Listen: "127.0.0.1:0", DeviceRetention: time.Minute,
		Store: memstore.New(memstore.Options{}), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err == nil || !strings.Contains(err.Error(), "--device-retention") {
		t.Fatalf("New with a 1m retention and the 120s mirror interval: %v; want a refusal naming --device-retention", err)
	}
}
