package session_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/test/bufconn"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/internal/blackhole"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/registry/memstore"
	"github.com/tetherhq/tether/server/session"
)

// replica is one hub served over an in-memory listener, for tests inside
// testing/synctest bubbles (bufconn blocks durably; real sockets do not).
type replica struct {
	hub   *session.Hub
	lis   *bufconn.Listener
	srv   *grpc.Server
	store registry.Store
}

func testConfig(node string) session.Config {
	return session.Config{Node: node, PingInterval: 10 * time.Second, PingTimeout: 5 * time.Second, MirrorInterval: 60 * time.Second}
}

func startReplica(t *testing.T, store registry.Store, cfg session.Config) *replica {
	t.Helper()
	return startReplicaWith(t, store, cfg)
}

func startReplicaWith(t *testing.T, store registry.Store, cfg session.Config, opts ...grpc.ServerOption) *replica {
	t.Helper()
	hub, err := session.NewHub(cfg, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	c := hub.Config()
	srv := grpc.NewServer(append([]grpc.ServerOption{
		grpc.Creds(session.TrackConns(insecure.NewCredentials())),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: c.PingInterval, Timeout: c.PingTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second}),
	}, opts...)...)
	tetherv1.RegisterAgentServiceServer(srv, hub)
	go srv.Serve(lis)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { hub.Mirror(ctx, cfg.Node); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Stop()
	})
	return &replica{hub: hub, lis: lis, srv: srv, store: store}
}

// device is a scripted agent: the test decides every message it sends.
type device struct {
	t      *testing.T
	conn   *grpc.ClientConn
	stream tetherv1.AgentService_ConnectClient
	cancel context.CancelFunc
	sw     *blackhole.Switch
	ack    *tetherv1.HelloAck
}

// dial opens a stream to r through a blackhole switch (so the test can cut
// the connection like a power loss).
func dial(t *testing.T, r *replica) *device {
	t.Helper()
	sw := blackhole.NewSwitch()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			c, err := r.lis.DialContext(ctx)
			if err != nil {
				return nil, err
			}
			return sw.Conn(c), nil
		}),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := tetherv1.NewAgentServiceClient(conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := &device{t: t, conn: conn, stream: stream, cancel: cancel, sw: sw}
	t.Cleanup(func() { cancel(); conn.Close() })
	return d
}

func hello(id, boot string, pong bool) *tetherv1.ConnectRequest {
	h := &tetherv1.Hello{DeviceId: id, AgentVersion: "test", Info: &tetherv1.DeviceInfo{BootId: boot, Hostname: id}}
	if pong {
		h.Capabilities = []tetherv1.Capability{tetherv1.Capability_CAPABILITY_PONG, tetherv1.Capability_CAPABILITY_COMMANDS}
	}
	return &tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_Hello{Hello: h}}
}

// connect dials and completes the Hello handshake.
func connect(t *testing.T, r *replica, id, boot string, pong bool) *device {
	t.Helper()
	d := dial(t, r)
	if err := d.stream.Send(hello(id, boot, pong)); err != nil {
		t.Fatal(err)
	}
	m, err := d.stream.Recv()
	if err != nil {
		t.Fatalf("waiting for HelloAck: %v", err)
	}
	if d.ack = m.GetHelloAck(); d.ack == nil {
		t.Fatalf("first server message = %v, want HelloAck", m)
	}
	return d
}

// answerPings runs a goroutine that answers Pings (and runs echo commands)
// until the stream ends.
func (d *device) serve() {
	go func() {
		for {
			m, err := d.stream.Recv()
			if err != nil {
				return
			}
			switch x := m.Msg.(type) {
			case *tetherv1.ConnectResponse_Ping:
				_ = d.stream.Send(&tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_Pong{Pong: &tetherv1.Pong{Seq: x.Ping.Seq, PingSentAt: x.Ping.SentAt}}})
			case *tetherv1.ConnectResponse_Command:
				out := ""
				for i, a := range x.Command.Args {
					if i > 0 {
						out += " "
					}
					out += a
				}
				_ = d.stream.Send(&tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_CommandResult{CommandResult: &tetherv1.CommandResult{CommandId: x.Command.CommandId, Output: out}}})
			}
		}
	}()
}

func mustGet(t *testing.T, s registry.Store, id string) registry.Record {
	t.Helper()
	r, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return r
}

func newStore() registry.Store { return memstore.New(memstore.Options{}) }
