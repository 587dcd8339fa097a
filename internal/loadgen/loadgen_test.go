package loadgen_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/internal/loadgen"
)

// fakeServer is a tiny AgentService and DeviceService: it acks every Hello,
// sends a Ping every pingEvery to every agent (legacy ones included, to check
// they ignore it), one echo Command per session, optionally a Close to one
// device, and routes SendCommand to the device's session.
type fakeServer struct {
	tetherv1.UnimplementedAgentServiceServer
	tetherv1.UnimplementedDeviceServiceServer
	pingEvery time.Duration
	kick      string // device id closed once with DRAINING
	silent    bool   // never answer Hello

	mu      sync.Mutex
	devices map[string]*fakeDevice
	ips     map[string]int
	kicked  bool
	nextCmd int
}

type fakeDevice struct {
	caps     []tetherv1.Capability
	sessions int
	pings    int
	pongs    int
	badPongs int
	echoOK   bool
	sess     *fakeSession // the live session, nil when offline
}

type fakeSession struct {
	cmds chan *pendingCmd
	done chan struct{}
}

type pendingCmd struct {
	cmd *tetherv1.Command
	res chan *tetherv1.CommandResult
}

const helloCmdID = "hello-cmd"

func startFake(t *testing.T, f *fakeServer) (addr string, stop func()) {
	t.Helper()
	f.devices = map[string]*fakeDevice{}
	f.ips = map[string]int{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	tetherv1.RegisterAgentServiceServer(s, f)
	tetherv1.RegisterDeviceServiceServer(s, f)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(lis) }()
	return lis.Addr().String(), func() { s.Stop(); <-done }
}

func (f *fakeServer) Connect(stream grpc.BidiStreamingServer[tetherv1.ConnectRequest, tetherv1.ConnectResponse]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "first message is not Hello")
	}
	if f.silent {
		<-ctx.Done()
		return nil
	}
	ip := ""
	if p, ok := peer.FromContext(ctx); ok {
		if ta, ok := p.Addr.(*net.TCPAddr); ok {
			ip = ta.IP.String()
		}
	}
	sess := &fakeSession{cmds: make(chan *pendingCmd, 16), done: make(chan struct{})}
	defer close(sess.done)
	id := hello.GetDeviceId()
	f.mu.Lock()
	d := f.devices[id]
	if d == nil {
		d = &fakeDevice{}
		f.devices[id] = d
	}
	d.caps = slices.Clone(hello.GetCapabilities())
	d.sessions++
	d.sess = sess
	f.ips[ip]++
	kick := id == f.kick && !f.kicked
	if kick {
		f.kicked = true
	}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		if d.sess == sess {
			d.sess = nil
		}
		f.mu.Unlock()
	}()

	send := func(m *tetherv1.ConnectResponse) error { return stream.Send(m) }
	if err := send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_HelloAck{HelloAck: &tetherv1.HelloAck{
		LeaseId: 1, ServerNode: "fake", PingInterval: durationpb.New(f.pingEvery), PingTimeout: durationpb.New(time.Second),
		LivenessMode: tetherv1.LivenessMode_LIVENESS_MODE_APP_PONG,
	}}}); err != nil {
		return err
	}
	if err := send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_Command{Command: &tetherv1.Command{
		CommandId: helloCmdID, Name: "echo", Args: []string{"hello", "world"}, Timeout: durationpb.New(time.Second),
	}}}); err != nil {
		return err
	}

	in := make(chan *tetherv1.ConnectRequest)
	go func() {
		defer close(in)
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			select {
			case in <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	tick := time.NewTicker(f.pingEvery)
	defer tick.Stop()
	var kickC <-chan time.Time
	if kick {
		kickC = time.After(300 * time.Millisecond)
	}
	sent := map[uint64]*timestamppb.Timestamp{}
	waiting := map[string]*pendingCmd{}
	var seq uint64
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-kickC:
			return send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_Close{Close: &tetherv1.Close{
				Reason: tetherv1.DisconnectReason_DISCONNECT_REASON_DRAINING, Message: "test drain", RetryAfter: durationpb.New(50 * time.Millisecond),
			}}})
		case <-tick.C:
			seq++
			ts := timestamppb.Now()
			sent[seq] = ts
			if err := send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_Ping{Ping: &tetherv1.Ping{Seq: seq, SentAt: ts}}}); err != nil {
				return err
			}
			f.mu.Lock()
			d.pings++
			f.mu.Unlock()
		case pc := <-sess.cmds:
			waiting[pc.cmd.GetCommandId()] = pc
			if err := send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_Command{Command: pc.cmd}}); err != nil {
				return err
			}
		case m, ok := <-in:
			if !ok {
				return nil
			}
			switch m := m.GetMsg().(type) {
			case *tetherv1.ConnectRequest_Pong:
				want, ok := sent[m.Pong.GetSeq()]
				good := ok && proto.Equal(want, m.Pong.GetPingSentAt()) && m.Pong.GetReceivedAt() != nil
				f.mu.Lock()
				if good {
					d.pongs++
				} else {
					d.badPongs++
				}
				f.mu.Unlock()
			case *tetherv1.ConnectRequest_CommandResult:
				r := m.CommandResult
				if r.GetCommandId() == helloCmdID {
					f.mu.Lock()
					d.echoOK = r.GetOutput() == "hello world" && r.GetExitCode() == 0 && r.GetError() == ""
					f.mu.Unlock()
				} else if pc := waiting[r.GetCommandId()]; pc != nil {
					delete(waiting, r.GetCommandId())
					pc.res <- r
				}
			}
		}
	}
}

func (f *fakeServer) SendCommand(ctx context.Context, req *tetherv1.SendCommandRequest) (*tetherv1.SendCommandResponse, error) {
	f.mu.Lock()
	var sess *fakeSession
	if d := f.devices[req.GetDeviceId()]; d != nil {
		sess = d.sess
	}
	f.nextCmd++
	id := fmt.Sprintf("cmd-%d", f.nextCmd)
	f.mu.Unlock()
	if sess == nil {
		return nil, status.Error(codes.Unavailable, "device not connected")
	}
	pc := &pendingCmd{
		cmd: &tetherv1.Command{CommandId: id, Name: req.GetName(), Args: req.GetArgs(), Timeout: req.GetTimeout()},
		res: make(chan *tetherv1.CommandResult, 1),
	}
	select {
	case sess.cmds <- pc:
	case <-sess.done:
		return nil, status.Error(codes.Unavailable, "session ended")
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	select {
	case r := <-pc.res:
		return &tetherv1.SendCommandResponse{CommandId: id, ExitCode: r.GetExitCode(), Output: r.GetOutput(), Error: r.GetError()}, nil
	case <-sess.done:
		return nil, status.Error(codes.Unavailable, "session ended")
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// waitGoroutines waits (bounded) until no more than n goroutines run, and
// fails with a dump of them otherwise.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			var b bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
			t.Fatalf("%d goroutines left, want <= %d:\n%s", runtime.NumGoroutine(), n, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLoadgenAgainstFakeServer(t *testing.T) {
	const devices, legacy = 50, 10
	baseline := runtime.NumGoroutine()
	f := &fakeServer{pingEvery: 100 * time.Millisecond, kick: "lg-7"}
	addr, stop := startFake(t, f)
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()
	ips, err := loadgen.ParseSourceIPs("127.0.0.2-127.0.0.4")
	if err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	began := time.Now()
	rep, err := loadgen.Run(ctx, loadgen.Config{
		Servers:             []string{addr},
		Devices:             devices,
		IDPrefix:            "lg-",
		LegacyFraction:      0.2,
		SourceIPs:           ips,
		Duration:            3 * time.Second,
		ReportEvery:         time.Second,
		Progress:            &syncWriter{w: &progress},
		DialTimeout:         5 * time.Second,
		Reconnect:           true,
		CommandsRate:        40,
		CommandsConcurrency: 8,
		CommandTimeout:      2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("run took %v; progress:\n%s\nfinal:\n%s", time.Since(began).Round(time.Millisecond), progress.String(), rep.Text())

	// The loadgen's own view.
	if !rep.AllConnected || rep.EverConnected != devices || rep.Connected != devices || rep.TimeToConnectAllSeconds == nil {
		t.Errorf("all_connected=%v ever=%d connected=%d, want all %d", rep.AllConnected, rep.EverConnected, rep.Connected, devices)
	}
	if rep.LegacyDevices != legacy {
		t.Errorf("legacy_devices=%d, want %d", rep.LegacyDevices, legacy)
	}
	if rep.ConnectFailures != 0 || len(rep.StreamErrorsByCode) != 0 {
		t.Errorf("connect failures %v, stream errors %v, want none (samples %v)", rep.ConnectFailuresByCode, rep.StreamErrorsByCode, rep.ErrorSamples)
	}
	if rep.ClosedByReason["DRAINING"] != 1 || rep.ConnectSuccesses != devices+1 {
		t.Errorf("closed=%v successes=%d, want one DRAINING close and %d successes", rep.ClosedByReason, rep.ConnectSuccesses, devices+1)
	}
	if rep.PingsAnswered == 0 || rep.PingsIgnored == 0 || rep.CommandsAnswered < devices {
		t.Errorf("pings answered=%d ignored=%d, commands answered=%d", rep.PingsAnswered, rep.PingsIgnored, rep.CommandsAnswered)
	}
	c := rep.Commands
	if c == nil || c.OK < 20 || c.LatencyMS.Count != c.OK || c.LatencyMS.P50 <= 0 || c.LatencyMS.P999 < c.LatencyMS.P50 {
		t.Errorf("commands report %+v, want >= 20 ok with latencies", c)
	} else {
		for code, n := range c.ErrorsByCode { // only the kicked device's short gap may fail
			if code != "Unavailable" || n > 3 {
				t.Errorf("command errors %v (samples %v)", c.ErrorsByCode, rep.ErrorSamples)
			}
		}
	}
	if !rep.CleanShutdown {
		t.Error("shutdown was not clean")
	}
	if runtime.GOOS == "linux" && (rep.Process.OpenFDs < devices || rep.Process.RSSBytes <= 0) {
		t.Errorf("process report %+v", rep.Process)
	}
	if !strings.Contains(progress.String(), "target=50 connected=") {
		t.Errorf("no progress lines:\n%s", progress.String())
	}

	// The server's view.
	f.mu.Lock()
	if len(f.devices) != devices {
		t.Errorf("server saw %d devices, want %d", len(f.devices), devices)
	}
	var sawLegacy int
	for id, d := range f.devices {
		pong := slices.Contains(d.caps, tetherv1.Capability_CAPABILITY_PONG)
		if !slices.Contains(d.caps, tetherv1.Capability_CAPABILITY_COMMANDS) {
			t.Errorf("%s: capabilities %v lack COMMANDS", id, d.caps)
		}
		if !pong {
			sawLegacy++
			if d.pongs != 0 || d.badPongs != 0 || d.pings == 0 {
				t.Errorf("legacy %s: pings %d pongs %d bad %d, want pinged and never ponged", id, d.pings, d.pongs, d.badPongs)
			}
		} else if d.pongs < 5 || d.badPongs != 0 {
			t.Errorf("%s: pings %d pongs %d bad %d, want answered pings", id, d.pings, d.pongs, d.badPongs)
		}
		if !d.echoOK {
			t.Errorf("%s: no echo result for the hello command", id)
		}
		wantSessions := 1
		if id == f.kick {
			wantSessions = 2
		}
		if d.sessions != wantSessions {
			t.Errorf("%s: %d sessions, want %d", id, d.sessions, wantSessions)
		}
	}
	if sawLegacy != legacy {
		t.Errorf("%d devices without CAPABILITY_PONG, want %d", sawLegacy, legacy)
	}
	if len(f.ips) < 2 {
		t.Errorf("server saw remote ips %v, want at least 2", f.ips)
	}
	for ip := range f.ips {
		a, err := netip.ParseAddr(ip)
		if err != nil || !slices.Contains(ips, a) {
			t.Errorf("remote ip %q is not one of the source ips", ip)
		}
	}
	f.mu.Unlock()

	stop()
	stopped = true
	waitGoroutines(t, baseline)
}

func TestUnreachableServerCountsFailuresByCode(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now
	baseline := runtime.NumGoroutine()
	rep, err := loadgen.Run(context.Background(), loadgen.Config{
		Servers: []string{addr}, Devices: 5, IDPrefix: "down-", Duration: time.Second, Reconnect: false,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.ConnectAttempts != 5 || rep.ConnectFailuresByCode["Unavailable"] != 5 || rep.EverConnected != 0 || rep.AllConnected {
		t.Errorf("report %+v, want 5 Unavailable failures", rep)
	}
	if !rep.CleanShutdown {
		t.Error("shutdown was not clean")
	}
	waitGoroutines(t, baseline)
}

func TestDialTimeoutWhenNoHelloAck(t *testing.T) {
	baseline := runtime.NumGoroutine()
	f := &fakeServer{pingEvery: time.Second, silent: true}
	addr, stop := startFake(t, f)
	rep, err := loadgen.Run(context.Background(), loadgen.Config{
		Servers: []string{addr}, Devices: 3, IDPrefix: "slow-", Duration: time.Second, DialTimeout: 300 * time.Millisecond, Reconnect: false,
	})
	stop()
	if err != nil {
		t.Fatal(err)
	}
	if rep.ConnectFailuresByCode["DeadlineExceeded"] != 3 || rep.EverConnected != 0 {
		t.Errorf("failures %v, want 3 DeadlineExceeded", rep.ConnectFailuresByCode)
	}
	waitGoroutines(t, baseline)
}

func TestRunRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]loadgen.Config{
		"no server":     {Devices: 1},
		"bad server":    {Servers: []string{"nohost"}, Devices: 1},
		"no devices":    {Servers: []string{"127.0.0.1:1"}},
		"bad id prefix": {Servers: []string{"127.0.0.1:1"}, Devices: 1, IDPrefix: "bad prefix/"},
		"id too long":   {Servers: []string{"127.0.0.1:1"}, Devices: 1000, IDPrefix: strings.Repeat("x", 62)},
		"bad legacy":    {Servers: []string{"127.0.0.1:1"}, Devices: 1, LegacyFraction: 1.5},
	} {
		if _, err := loadgen.Run(context.Background(), cfg); err == nil {
			t.Errorf("%s: Run succeeded", name)
		}
	}
}

// syncWriter serializes writes for the race detector's sake (the progress
// goroutine writes while the test does not read until Run returns, but the
// buffer is shared across goroutines).
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
