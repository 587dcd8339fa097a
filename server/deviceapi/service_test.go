package deviceapi_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/internal/fakeagent"
	"github.com/tetherhq/tether/server/deviceapi"
	"github.com/tetherhq/tether/server/metrics"
	"github.com/tetherhq/tether/server/registry/memstore"
	"github.com/tetherhq/tether/server/session"
)

type fixture struct {
	api    tetherv1.DeviceServiceClient
	agents tetherv1.AgentServiceClient
	hub    *session.Hub
	svc    *deviceapi.Service
	lis    *bufconn.Listener // the server's listener, for a client of a test's own
}

func newFixture(t *testing.T, cfg session.Config) *fixture {
	t.Helper()
	return newFixtureAPI(t, cfg, deviceapi.Config{OutputCap: 16})
}

func newFixtureAPI(t testing.TB, cfg session.Config, apiCfg deviceapi.Config) *fixture {
	t.Helper()
	store := memstore.New(memstore.Options{})
	if cfg.Node == "" {
		cfg.Node = "n1"
	}
	m := metrics.New(nil)
	hub, err := session.NewHub(cfg, store, m)
	if err != nil {
		t.Fatal(err)
	}
	svc := deviceapi.New(apiCfg, store, hub, m)
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(grpc.Creds(session.TrackConns(insecure.NewCredentials())))
	tetherv1.RegisterAgentServiceServer(srv, hub)
	tetherv1.RegisterDeviceServiceServer(srv, svc)
	go srv.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	mctx, stopMirror := context.WithCancel(context.Background())
	mirrored := make(chan struct{})
	go func() { hub.Mirror(mctx, "n1-addr"); close(mirrored) }()
	t.Cleanup(func() { stopMirror(); <-mirrored; svc.Close(); conn.Close(); srv.Stop() })
	return &fixture{api: tetherv1.NewDeviceServiceClient(conn), agents: tetherv1.NewAgentServiceClient(conn), hub: hub, svc: svc, lis: lis}
}

// agentBehaviour says how a scripted agent answers commands.
type agentBehaviour struct {
	delay  time.Duration // before answering
	silent bool          // never answer commands
}

// runAgent connects a scripted agent that answers Pings and echo commands.
func (f *fixture) runAgent(t *testing.T, id string, b agentBehaviour, labels map[string]string) (uint64, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := f.agents.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = stream.Send(&tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_Hello{Hello: &tetherv1.Hello{
		DeviceId: id, AgentVersion: "t", Capabilities: []tetherv1.Capability{tetherv1.Capability_CAPABILITY_PONG},
		Info: &tetherv1.DeviceInfo{Hostname: id, Labels: labels},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.Recv()
	if err != nil || m.GetHelloAck() == nil {
		t.Fatalf("hello: %v %v", m, err)
	}
	go fakeagent.Serve(stream, func(c *tetherv1.Command) (string, time.Duration, bool) {
		return strings.Join(c.Args, " "), b.delay, !b.silent
	})
	t.Cleanup(cancel)
	return m.GetHelloAck().GetLeaseId(), cancel
}

func code(err error) codes.Code { return status.Code(err) }

func TestSendCommandRunsOnTheCurrentSessionAndNamesItsLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, session.Config{})
		lease, _ := f.runAgent(t, "d1", agentBehaviour{}, nil)
		resp, err := f.api.SendCommand(context.Background(), &tetherv1.SendCommandRequest{DeviceId: "d1", Name: "echo", Args: []string{"hi", "there"}})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetOutput() != "hi there" || resp.GetLeaseId() != lease || resp.GetNode() != "n1" {
			t.Fatalf("resp = %v", resp)
		}
	})
}

func TestSendCommandErrorsHaveTheDocumentedCodes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, session.Config{MaxInflightCommands: 2})
		ctx := context.Background()
		_, err := f.api.SendCommand(ctx, &tetherv1.SendCommandRequest{DeviceId: "nobody", Name: "echo"})
		if code(err) != codes.NotFound {
			t.Errorf("unknown device: %v", err)
		}
		_, stop := f.runAgent(t, "gone", agentBehaviour{}, nil)
		stop()
		for f.hub.Lookup("gone") != nil {
			time.Sleep(10 * time.Millisecond)
		}
		_, err = f.api.SendCommand(ctx, &tetherv1.SendCommandRequest{DeviceId: "gone", Name: "echo"})
		if code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "offline since") {
			t.Errorf("offline device: %v", err)
		}
		for _, bad := range []*tetherv1.SendCommandRequest{
			{DeviceId: "bad id", Name: "echo"},
			{DeviceId: "d1", Name: ""},
			{DeviceId: "d1", Name: "rm -rf"},
			{DeviceId: "d1", Name: "echo", Timeout: durationpb.New(time.Hour)},
			{DeviceId: "d1", Name: "echo", Args: make([]string, 65)},
		} {
			if _, err := f.api.SendCommand(ctx, bad); code(err) != codes.InvalidArgument {
				t.Errorf("%v: %v, want InvalidArgument", bad, err)
			}
		}

		f.runAgent(t, "slow", agentBehaviour{delay: 3 * time.Second}, nil)
		start := time.Now()
		_, err = f.api.SendCommand(ctx, &tetherv1.SendCommandRequest{DeviceId: "slow", Name: "echo", Timeout: durationpb.New(time.Second)})
		if code(err) != codes.DeadlineExceeded {
			t.Errorf("timeout: %v", err)
		}
		if took := time.Since(start); took != time.Second {
			t.Errorf("timed out after %v, want the requested 1s", took)
		}
		// The late result arrives and is dropped; the next caller gets
		// its own answer, not the late one.
		f2 := func() string {
			r, err := f.api.SendCommand(ctx, &tetherv1.SendCommandRequest{DeviceId: "slow", Name: "echo", Args: []string{"second"}})
			if err != nil {
				t.Fatal(err)
			}
			return r.GetOutput()
		}
		if got := f2(); got != "second" {
			t.Errorf("second caller got %q", got)
		}

		f.runAgent(t, "mute", agentBehaviour{silent: true}, nil)
		errs := make(chan error, 3)
		for i := 0; i < 3; i++ {
			go func() {
				_, err := f.api.SendCommand(ctx, &tetherv1.SendCommandRequest{DeviceId: "mute", Name: "echo", Timeout: durationpb.New(30 * time.Second)})
				errs <- err
			}()
		}
		synctest.Wait()
		// Two are in flight (the cap); the third was refused at once.
		if err := <-errs; code(err) != codes.ResourceExhausted {
			t.Errorf("beyond the cap: %v", err)
		}
		// Now the session ends while two commands are in flight.
		if _, err := f.api.DisconnectDevice(ctx, &tetherv1.DisconnectDeviceRequest{DeviceId: "mute"}); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ {
			if err := <-errs; code(err) != codes.Aborted || !strings.Contains(status.Convert(err).Message(), "operator") {
				t.Errorf("in flight at session end: %v", err)
			}
		}
	})
}

func TestOutputIsCappedAndFlagged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, session.Config{})
		f.runAgent(t, "d1", agentBehaviour{}, nil)
		resp, err := f.api.SendCommand(context.Background(), &tetherv1.SendCommandRequest{DeviceId: "d1", Name: "echo", Args: []string{strings.Repeat("x", 40)}})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetOutput()) != 16 || !resp.GetOutputTruncated() {
			t.Fatalf("output %q truncated=%v, want 16 bytes and the flag", resp.GetOutput(), resp.GetOutputTruncated())
		}
	})
}

func TestListDevicesPagesAndFilters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, session.Config{})
		ctx := context.Background()
		for _, id := range []string{"a1", "a2", "a3", "b1", "b2"} {
			labels := map[string]string{"site": id[:1]}
			_, stop := f.runAgent(t, id, agentBehaviour{}, labels)
			if id == "a2" {
				stop()
			}
		}
		for f.hub.Lookup("a2") != nil {
			time.Sleep(10 * time.Millisecond)
		}
		var ids []string
		tok := ""
		for {
			resp, err := f.api.ListDevices(ctx, &tetherv1.ListDevicesRequest{PageSize: 2, PageToken: tok})
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range resp.GetDevices() {
				ids = append(ids, d.GetDeviceId())
			}
			if tok = resp.GetNextPageToken(); tok == "" {
				break
			}
		}
		if strings.Join(ids, ",") != "a1,a2,a3,b1,b2" {
			t.Fatalf("paged ids = %v", ids)
		}
		resp, err := f.api.ListDevices(ctx, &tetherv1.ListDevicesRequest{Presence: tetherv1.PresenceFilter_PRESENCE_FILTER_ONLINE, LabelSelector: "site=a"})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range resp.GetDevices() {
			got = append(got, d.GetDeviceId())
		}
		if strings.Join(got, ",") != "a1,a3" {
			t.Fatalf("online site=a = %v", got)
		}
		if _, err := f.api.ListDevices(ctx, &tetherv1.ListDevicesRequest{PageToken: "garbage!"}); code(err) != codes.InvalidArgument {
			t.Errorf("bad token: %v", err)
		}
		if _, err := f.api.ListDevices(ctx, &tetherv1.ListDevicesRequest{LabelSelector: "version>2"}); code(err) != codes.InvalidArgument {
			t.Errorf("bad selector: %v", err)
		}
	})
}

func TestWatchDeliversSnapshotThenLiveEventsAndResumes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, session.Config{})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		f.runAgent(t, "w1", agentBehaviour{}, nil)
		w, err := f.api.WatchDevices(ctx, &tetherv1.WatchDevicesRequest{IncludeSnapshot: true})
		if err != nil {
			t.Fatal(err)
		}
		next := func() *tetherv1.DeviceEvent {
			for {
				m, err := w.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if m.GetEvent().GetType() != tetherv1.EventType_EVENT_TYPE_HEARTBEAT {
					return m.GetEvent()
				}
			}
		}
		if e := next(); e.GetType() != tetherv1.EventType_EVENT_TYPE_SNAPSHOT || e.GetDeviceId() != "w1" || !e.GetDevice().GetOnline() {
			t.Fatalf("snapshot = %v", e)
		}
		if e := next(); e.GetType() != tetherv1.EventType_EVENT_TYPE_SNAPSHOT_END {
			t.Fatalf("want SNAPSHOT_END, got %v", e)
		}
		_, stop := f.runAgent(t, "w2", agentBehaviour{}, nil)
		on := next()
		if on.GetType() != tetherv1.EventType_EVENT_TYPE_ONLINE || on.GetDeviceId() != "w2" || on.GetEventId() == "" {
			t.Fatalf("want ONLINE w2, got %v", on)
		}
		stop()
		off := next()
		if off.GetType() != tetherv1.EventType_EVENT_TYPE_OFFLINE || off.GetReason() != tetherv1.DisconnectReason_DISCONNECT_REASON_CLIENT_CLOSED {
			t.Fatalf("want OFFLINE client_closed, got %v", off)
		}
		// Resume from the ONLINE event: the OFFLINE comes again.
		w2, err := f.api.WatchDevices(ctx, &tetherv1.WatchDevicesRequest{AfterEventId: on.GetEventId()})
		if err != nil {
			t.Fatal(err)
		}
		m, err := w2.Recv()
		if err != nil || m.GetEvent().GetType() != tetherv1.EventType_EVENT_TYPE_HEARTBEAT {
			t.Fatalf("a watch without snapshot starts with %v %v, want a HEARTBEAT", m, err)
		}
		m, err = w2.Recv()
		if err != nil || m.GetEvent().GetEventId() != off.GetEventId() {
			t.Fatalf("resumed with %v %v, want %v", m, err, off)
		}
		// An idle watch gets heartbeats.
		start := time.Now()
		m, err = w2.Recv()
		if err != nil || m.GetEvent().GetType() != tetherv1.EventType_EVENT_TYPE_HEARTBEAT || time.Since(start) > 16*time.Second {
			t.Fatalf("heartbeat: %v %v after %v", m, err, time.Since(start))
		}
		if _, err := f.api.WatchDevices(ctx, &tetherv1.WatchDevicesRequest{AfterEventId: "abc"}); err == nil {
			ww, _ := f.api.WatchDevices(ctx, &tetherv1.WatchDevicesRequest{AfterEventId: "abc"})
			if _, err := ww.Recv(); code(err) != codes.InvalidArgument {
				t.Fatalf("bad event id: %v", err)
			}
		}
	})
}
