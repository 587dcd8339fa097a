package agent

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// serverMinPingTime is the server's keepalive EnforcementPolicy.MinTime.
const serverMinPingTime = 10 * time.Second

// fakeServer is an AgentService whose every stream is handed to the test as
// a fakeConn; the test decides what the server says and when it ends.
type fakeServer struct {
	tetherv1.UnimplementedAgentServiceServer
	conns chan *fakeConn
}

// fakeConn is one agent stream as the server sees it.
type fakeConn struct {
	t      *testing.T
	stream tetherv1.AgentService_ConnectServer
	hello  *tetherv1.Hello
	at     time.Time                     // when the Hello arrived
	recv   chan *tetherv1.ConnectRequest // messages after Hello; closed when the stream ends
	end    chan error                    // the handler returns what is sent here
	ended  chan struct{}                 // closed when the handler has returned
	endAt  time.Time
}

func (f *fakeServer) Connect(stream tetherv1.AgentService_ConnectServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	c := &fakeConn{
		stream: stream, hello: first.GetHello(), at: time.Now(),
		recv: make(chan *tetherv1.ConnectRequest, 64), end: make(chan error, 1), ended: make(chan struct{}),
	}
	go func() {
		defer close(c.recv)
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			select {
			case c.recv <- m:
			case <-stream.Context().Done():
				return
			}
		}
	}()
	select {
	case f.conns <- c:
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
	defer func() { c.endAt = time.Now(); close(c.ended) }()
	select {
	case err := <-c.end:
		return err
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
}

func (c *fakeConn) send(m *tetherv1.ConnectResponse) {
	c.t.Helper()
	if err := c.stream.Send(m); err != nil {
		c.t.Fatalf("server send: %v", err)
	}
}

func (c *fakeConn) ack(lease uint64) {
	c.t.Helper()
	c.send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_HelloAck{HelloAck: &tetherv1.HelloAck{
		LeaseId: lease, ServerNode: "fake", PingInterval: durationpb.New(10 * time.Second), PingTimeout: durationpb.New(5 * time.Second),
	}}})
}

// close sends Close and ends the stream, as the real server does; it
// returns when the handler has returned.
func (c *fakeConn) close(reason tetherv1.DisconnectReason, retryAfter time.Duration) {
	c.t.Helper()
	cl := &tetherv1.Close{Reason: reason, Message: "test"}
	if retryAfter > 0 {
		cl.RetryAfter = durationpb.New(retryAfter)
	}
	c.send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_Close{Close: cl}})
	c.finish(nil)
}

// finish ends the stream with err and waits for the handler to return.
func (c *fakeConn) finish(err error) {
	c.end <- err
	<-c.ended
}

// next returns the next message the agent sent on this stream.
func (c *fakeConn) next() *tetherv1.ConnectRequest {
	c.t.Helper()
	m, ok := <-c.recv
	if !ok {
		c.t.Fatal("the agent's stream ended while a message was expected")
	}
	return m
}

// fakeInfo is an injectable, changeable device info source.
type fakeInfo struct {
	mu   sync.Mutex
	info *tetherv1.DeviceInfo
}

func (f *fakeInfo) get() (*tetherv1.DeviceInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return proto.Clone(f.info).(*tetherv1.DeviceInfo), nil
}

func (f *fakeInfo) setHostname(h string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.info.Hostname = h
}

// harness runs an Agent against a fakeServer over bufconn. Create it inside
// synctest.Test: the fake clock then drives backoff, timeouts and tickers.
type harness struct {
	t      *testing.T
	srv    *fakeServer            // the first server
	srvs   map[string]*fakeServer // by name (passthrough:///<name>)
	lis    map[string]*bufconn.Listener
	info   *fakeInfo
	cancel context.CancelFunc
	done   chan error
	agent  *Agent
}

func startAgent(t *testing.T, cfg Config) *harness {
	t.Helper()
	return startAgentOn(t, cfg, "bufnet")
}

// startAgentOn runs one fake server per name and an agent given all of them,
// in order, as passthrough:///<name>.
func startAgentOn(t *testing.T, cfg Config, names ...string) *harness {
	t.Helper()
	srvs := map[string]*fakeServer{}
	liss := map[string]*bufconn.Listener{}
	var addrs []string
	for _, name := range names {
		lis := bufconn.Listen(1 << 20)
		// The real server's enforcement policy (server/keepalive.go): pings
		// from the agent more often than every 10s would earn a GOAWAY. The
		// server's own pings are left off: they would keep the agent's
		// keepalive from ever firing, and these tests want it to.
		gs := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: serverMinPingTime, PermitWithoutStream: false}))
		srv := &fakeServer{conns: make(chan *fakeConn, 16)}
		tetherv1.RegisterAgentServiceServer(gs, srv)
		go gs.Serve(lis)
		t.Cleanup(func() { gs.Stop(); lis.Close() })
		srvs[name], liss[name] = srv, lis
		addrs = append(addrs, "passthrough:///"+name)
	}

	fi := &fakeInfo{info: &tetherv1.DeviceInfo{
		Mac: "aa:bb:cc:dd:ee:ff", Hostname: "box-1", IpAddresses: []string{"192.0.2.7"}, Os: "linux", Arch: "amd64", BootId: "boot-1",
	}}
	cfg.ServerAddr = strings.Join(addrs, ",")
	cfg.DialOptions = append(cfg.DialOptions, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		return liss[addr].DialContext(ctx)
	}))
	if cfg.InfoSource == nil {
		cfg.InfoSource = fi.get
	}
	if cfg.Version == "" {
		cfg.Version = "v0.0.0-test"
	}
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, srv: srvs[names[0]], srvs: srvs, lis: liss, info: fi, cancel: cancel, done: make(chan error, 1), agent: a}
	go func() { h.done <- a.Run(ctx) }()
	t.Cleanup(h.stop) // before the servers stop (cleanups run last first)
	return h
}

// conn waits for the agent's next stream.
func (h *harness) conn() *fakeConn {
	h.t.Helper()
	c := <-h.srv.conns
	c.t = h.t
	return c
}

// connOn waits for the agent's next stream, which must reach the server
// called name.
func (h *harness) connOn(name string) *fakeConn {
	h.t.Helper()
	for n, srv := range h.srvs {
		if n == name {
			continue
		}
		select {
		case c := <-srv.conns:
			h.t.Fatalf("the agent connected to %s, want %s (hello %v)", n, name, c.hello)
		default:
		}
	}
	c := <-h.srvs[name].conns
	c.t = h.t
	return c
}

// stop cancels Run and waits for it to return.
func (h *harness) stop() {
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Errorf("Run returned %v, want nil", err)
	}
	h.done <- nil // let a second stop (Cleanup) pass
}
