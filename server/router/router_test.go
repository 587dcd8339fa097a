package router_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/internal/fakeagent"
	"github.com/tetherhq/tether/server/metrics"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/registry/memstore"
	"github.com/tetherhq/tether/server/router"
	"github.com/tetherhq/tether/server/session"
)

// replica is one node: a hub, a router and a gRPC server (AgentService,
// PeerService) on a real loopback socket.
type replica struct {
	hub    *session.Hub
	router *router.Router
	conn   *grpc.ClientConn
}

func startReplica(t *testing.T, node string, store registry.Store) *replica {
	t.Helper()
	return startReplicaPeer(t, node, store, false)
}

// oldPeer is a replica of a version before Invoke: only the legacy
// forwards are served.
type oldPeer struct {
	*router.PeerServer
}

func (oldPeer) Invoke(context.Context, *tetherv1.InvokeRequest) (*tetherv1.InvokeResponse, error) {
	return nil, status.Error(codes.Unimplemented, "unknown method Invoke for service tether.v1.PeerService")
}

func startReplicaPeer(t *testing.T, node string, store registry.Store, old bool) *replica {
	t.Helper()
	m := metrics.New(nil)
	hub, err := session.NewHub(session.Config{Node: node}, store, m)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	peers := router.NewPeers(grpc.WithTransportCredentials(insecure.NewCredentials()))
	rt := router.New(router.Config{Hub: hub, Registry: store, Peers: peers, Metrics: m})
	srv := grpc.NewServer(grpc.Creds(session.TrackConns(insecure.NewCredentials())))
	tetherv1.RegisterAgentServiceServer(srv, hub)
	if old {
		tetherv1.RegisterPeerServiceServer(srv, oldPeer{rt.PeerServer()})
	} else {
		tetherv1.RegisterPeerServiceServer(srv, rt.PeerServer())
	}
	go srv.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	if !hub.Register(ctx, lis.Addr().String()) {
		t.Fatal("register failed")
	}
	go func() { hub.Mirror(ctx, lis.Addr().String()); close(done) }()
	t.Cleanup(func() { stop(); <-done; conn.Close(); srv.Stop(); peers.Close() })
	return &replica{hub: hub, router: rt, conn: conn}
}

// agent connects a scripted agent that echoes its command's args.
func (r *replica) agent(t *testing.T, id string) uint64 {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := tetherv1.NewAgentServiceClient(r.conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_Hello{Hello: &tetherv1.Hello{
		DeviceId: id, AgentVersion: "t", Capabilities: []tetherv1.Capability{tetherv1.Capability_CAPABILITY_PONG},
		Info: &tetherv1.DeviceInfo{Hostname: id},
	}}}); err != nil {
		t.Fatal(err)
	}
	m, err := stream.Recv()
	if err != nil || m.GetHelloAck() == nil {
		t.Fatalf("hello: %v %v", m, err)
	}
	go fakeagent.Serve(stream, func(c *tetherv1.Command) (string, time.Duration, bool) {
		return strings.Join(c.Args, " "), 0, c.Name != "hang" // "hang" is never answered
	})
	return m.GetHelloAck().GetLeaseId()
}

func echo(id string, args ...string) router.Op {
	return router.Op{Command: &tetherv1.SendCommandRequest{DeviceId: id, Name: "echo", Args: args}}
}

func TestOperationsRunWhereTheSessionIsHeld(t *testing.T) {
	store := memstore.New(memstore.Options{})
	a, b := startReplica(t, "a", store), startReplica(t, "b", store)
	leaseA := a.agent(t, "on-a")
	leaseB := b.agent(t, "on-b")
	ctx := context.Background()

	for _, c := range []struct {
		from     *replica
		id, node string
		lease    uint64
	}{{a, "on-a", "a", leaseA}, {a, "on-b", "b", leaseB}, {b, "on-a", "a", leaseA}} {
		res, err := c.from.router.Run(ctx, echo(c.id, "hi", c.id))
		if err != nil {
			t.Fatalf("%s from %s: %v", c.id, c.from.router.Node(), err)
		}
		if r := res.Command; r.GetOutput() != "hi "+c.id || r.GetNode() != c.node || r.GetLeaseId() != c.lease {
			t.Fatalf("%s from %s: %v", c.id, c.from.router.Node(), r)
		}
	}

	// Disconnect over the peer call.
	res, err := a.router.Run(ctx, router.Op{Disconnect: &tetherv1.DisconnectDeviceRequest{DeviceId: "on-b"}})
	if err != nil || res.Disconnect.GetLeaseId() != leaseB || res.Disconnect.GetNode() != "b" {
		t.Fatalf("disconnect: %v %v", res.Disconnect, err)
	}
	_, err = a.router.Run(ctx, echo("on-b"))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("command to a disconnected device: %v", err)
	}
}

func TestOwnerErrorsAreMarkedWithTheirReason(t *testing.T) {
	store := memstore.New(memstore.Options{})
	a, b := startReplica(t, "a", store), startReplica(t, "b", store)
	leaseB := b.agent(t, "on-b")
	ctx := context.Background()

	// A lease the owner no longer holds: NOT_HELD (from the owner, over
	// the peer call, and locally), never re-sent to the newer session.
	newer := b.agent(t, "on-b")
	if newer <= leaseB {
		t.Fatalf("new lease %d not above %d", newer, leaseB)
	}
	for name, rt := range map[string]*router.Router{"forwarded": a.router, "local": b.router} {
		_, err := rt.At(ctx, "b", leaseB, echo("on-b"))
		if status.Code(err) != codes.Aborted || router.Reason(err) != router.ReasonNotHeld || !router.NotDelivered(err) {
			t.Fatalf("%s, stale lease: %v (reason %q); want ABORTED NOT_HELD", name, err, router.Reason(err))
		}
	}

	// A node that never registered: OWNER_UNREACHABLE.
	_, err := a.router.At(ctx, "ghost", 1, echo("on-b"))
	if status.Code(err) != codes.Unavailable || router.Reason(err) != router.ReasonOwnerUnreachable || !router.NotDelivered(err) {
		t.Fatalf("ghost owner: %v (reason %q)", err, router.Reason(err))
	}

	// A command that times out on the owner: OWNER_ANSWER.
	_, err = a.router.Run(ctx, router.Op{Command: &tetherv1.SendCommandRequest{DeviceId: "on-b", Name: "hang", Timeout: durationpb.New(50 * time.Millisecond)}})
	if status.Code(err) != codes.DeadlineExceeded || router.Reason(err) != router.ReasonOwnerAnswer || router.NotDelivered(err) {
		t.Fatalf("unanswered command: %v (reason %q)", err, router.Reason(err))
	}

	// Without peer routing: OWNER_UNREACHABLE, and the text says why.
	solo := router.New(router.Config{Hub: a.hub, Registry: store})
	_, err = solo.Run(ctx, echo("on-b"))
	if status.Code(err) != codes.Unavailable || router.Reason(err) != router.ReasonOwnerUnreachable || !strings.Contains(err.Error(), "peer routing is disabled") {
		t.Fatalf("no peers: %v", err)
	}

	// Bad input: INVALID_ARGUMENT, unmarked.
	_, err = a.router.Run(ctx, router.Op{})
	if status.Code(err) != codes.InvalidArgument || router.Reason(err) != "" {
		t.Fatalf("empty op: %v", err)
	}
}

func TestLegacyForwardsAreStillServed(t *testing.T) {
	store := memstore.New(memstore.Options{})
	_, b := startReplica(t, "a", store), startReplica(t, "b", store)
	lease := b.agent(t, "d")
	peer := tetherv1.NewPeerServiceClient(b.conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := peer.ForwardCommand(ctx, &tetherv1.ForwardCommandRequest{LeaseId: lease, Request: &tetherv1.SendCommandRequest{DeviceId: "d", Name: "echo", Args: []string{"old"}}})
	if err != nil || resp.GetResponse().GetOutput() != "old" {
		t.Fatalf("ForwardCommand: %v %v", resp, err)
	}
	_, err = peer.ForwardCommand(ctx, &tetherv1.ForwardCommandRequest{LeaseId: 0, Request: &tetherv1.SendCommandRequest{DeviceId: "d", Name: "echo"}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("lease 0: %v", err)
	}
	_, err = peer.Invoke(ctx, &tetherv1.InvokeRequest{LeaseId: lease})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Invoke without an op: %v", err)
	}
	dr, err := peer.ForwardDisconnect(ctx, &tetherv1.ForwardDisconnectRequest{LeaseId: lease, Request: &tetherv1.DisconnectDeviceRequest{DeviceId: "d"}})
	if err != nil || dr.GetResponse().GetLeaseId() != lease {
		t.Fatalf("ForwardDisconnect: %v %v", dr, err)
	}
}

func TestMergeOverlaysTheLocalSessionOnly(t *testing.T) {
	store := memstore.New(memstore.Options{})
	a := startReplica(t, "a", store)
	lease := a.agent(t, "d")
	ctx := context.Background()
	rec, err := store.Get(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	stale := rec
	s := *rec.Session
	s.LastSeen = time.Unix(1, 0)
	stale.Session = &s
	merged := a.router.Merge(stale)
	if !merged.Session.LastSeen.After(time.Unix(1, 0)) || stale.Session.LastSeen != time.Unix(1, 0) {
		t.Fatalf("merge: %v (given record changed: %v)", merged.Session.LastSeen, stale.Session.LastSeen)
	}
	other := stale
	s2 := *stale.Session
	s2.Lease = lease + 1
	other.Session = &s2
	if got := a.router.Merge(other); got.Session.LastSeen != time.Unix(1, 0) {
		t.Fatalf("merged a session of another lease: %v", got.Session.LastSeen)
	}
}

func TestAReplicaWithoutInvokeIsReachedWithTheLegacyCalls(t *testing.T) {
	store := memstore.New(memstore.Options{})
	a, old := startReplica(t, "a", store), startReplicaPeer(t, "old", store, true)
	lease := old.agent(t, "d")
	res, err := a.router.Run(context.Background(), echo("d", "mixed", "versions"))
	if err != nil || res.Command.GetOutput() != "mixed versions" || res.Command.GetLeaseId() != lease {
		t.Fatalf("command via the legacy call: %v %v", res.Command, err)
	}
	dr, err := a.router.Run(context.Background(), router.Op{Disconnect: &tetherv1.DisconnectDeviceRequest{DeviceId: "d"}})
	if err != nil || dr.Disconnect.GetNode() != "old" {
		t.Fatalf("disconnect via the legacy call: %v %v", dr.Disconnect, err)
	}
}
