package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/gateway"
)

// errorDevices are device ids for which the fake fleet's GetDevice fails with
// the given code.
var errorDevices = map[string]codes.Code{
	"missing":         codes.NotFound,
	"err-unavailable": codes.Unavailable,
	"err-deadline":    codes.DeadlineExceeded,
	"err-aborted":     codes.Aborted,
	"err-exhausted":   codes.ResourceExhausted,
	"err-denied":      codes.PermissionDenied,
	"err-unauth":      codes.Unauthenticated,
	"err-invalid":     codes.InvalidArgument,
	"err-internal":    codes.Internal,
}

// fakeFleet is an in-test DeviceServiceServer: the gateway is what is under
// test, so the backend answers from fixed data and records what it received.
type fakeFleet struct {
	tetherv1.UnimplementedDeviceServiceServer
	node string

	calls atomic.Int64 // every DeviceService call

	mu          sync.Mutex // guards the following
	lastMD      metadata.MD
	lastList    *tetherv1.ListDevicesRequest
	lastCommand *tetherv1.SendCommandRequest
	lastWatch   *tetherv1.WatchDevicesRequest
	disconnects int

	// nextEvent releases the watch's second event: the test sends on it after
	// it has read the first line.
	nextEvent chan struct{}
	// floodEnded gets how a "flood" watch ended.
	floodEnded chan error
}

func newFakeFleet(node string) *fakeFleet {
	return &fakeFleet{node: node, nextEvent: make(chan struct{}), floodEnded: make(chan error, 1)}
}

func (f *fakeFleet) record(ctx context.Context) {
	f.calls.Add(1)
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	f.lastMD = md
	f.mu.Unlock()
}

func (f *fakeFleet) metadata() metadata.MD {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastMD
}

func device(id string) *tetherv1.Device {
	return &tetherv1.Device{
		DeviceId: id,
		Online:   true,
		Info: &tetherv1.DeviceInfo{
			Mac:         "aa:bb:cc:dd:ee:ff",
			Hostname:    "host-" + id,
			IpAddresses: []string{"10.0.0.7"},
			Labels:      map[string]string{"site": "lab"},
		},
		Session: &tetherv1.Session{
			LeaseId:      7,
			Node:         "node-a",
			ConnectedAt:  timestamppb.New(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)),
			LivenessMode: tetherv1.LivenessMode_LIVENESS_MODE_APP_PONG,
		},
	}
}

func (f *fakeFleet) ListDevices(ctx context.Context, req *tetherv1.ListDevicesRequest) (*tetherv1.ListDevicesResponse, error) {
	f.record(ctx)
	f.mu.Lock()
	f.lastList = req
	f.mu.Unlock()
	return &tetherv1.ListDevicesResponse{
		Devices:       []*tetherv1.Device{device("d1"), device("d2")},
		NextPageToken: "page-2",
	}, nil
}

func (f *fakeFleet) GetDevice(ctx context.Context, req *tetherv1.GetDeviceRequest) (*tetherv1.GetDeviceResponse, error) {
	f.record(ctx)
	if code, ok := errorDevices[req.GetDeviceId()]; ok {
		return nil, status.Errorf(code, "device %s: %s", req.GetDeviceId(), code)
	}
	return &tetherv1.GetDeviceResponse{Device: device(req.GetDeviceId())}, nil
}

func (f *fakeFleet) SendCommand(ctx context.Context, req *tetherv1.SendCommandRequest) (*tetherv1.SendCommandResponse, error) {
	f.record(ctx)
	f.mu.Lock()
	f.lastCommand = req
	f.mu.Unlock()
	return &tetherv1.SendCommandResponse{
		CommandId: "cmd-1",
		LeaseId:   7,
		Node:      f.node,
		Output:    strings.Join(append([]string{req.GetName()}, req.GetArgs()...), " "),
		Duration:  durationpb.New(1500 * time.Millisecond),
	}, nil
}

func (f *fakeFleet) DisconnectDevice(ctx context.Context, req *tetherv1.DisconnectDeviceRequest) (*tetherv1.DisconnectDeviceResponse, error) {
	f.record(ctx)
	f.mu.Lock()
	f.disconnects++
	f.mu.Unlock()
	return &tetherv1.DisconnectDeviceResponse{LeaseId: 42, Node: f.node}, nil
}

// WatchDevices sends an ONLINE event, waits for nextEvent, sends an OFFLINE
// event, then ends: with ABORTED when afterEventId is "fail", otherwise OK.
// With afterEventId "hold" it waits for the stream to be cancelled instead;
// with "flood" it sends 32 KiB events until a send fails (floodEnded).
func (f *fakeFleet) WatchDevices(req *tetherv1.WatchDevicesRequest, stream grpc.ServerStreamingServer[tetherv1.WatchDevicesResponse]) error {
	f.record(stream.Context())
	f.mu.Lock()
	f.lastWatch = req
	f.mu.Unlock()
	ev := func(id string, typ tetherv1.EventType) *tetherv1.WatchDevicesResponse {
		return &tetherv1.WatchDevicesResponse{Event: &tetherv1.DeviceEvent{
			EventId: id, Type: typ, DeviceId: "d1", LeaseId: 7, Node: f.node,
		}}
	}
	if err := stream.Send(ev("1-0", tetherv1.EventType_EVENT_TYPE_ONLINE)); err != nil {
		return err
	}
	if req.GetAfterEventId() == "flood" {
		big := ev("flood", tetherv1.EventType_EVENT_TYPE_INFO_CHANGED)
		big.Event.Device = &tetherv1.Device{Info: &tetherv1.DeviceInfo{Hostname: strings.Repeat("h", 32<<10)}}
		var err error
		for i := 0; err == nil && i < 100_000; i++ {
			err = stream.Send(big)
		}
		f.floodEnded <- err
		return err
	}
	if req.GetAfterEventId() == "hold" {
		<-stream.Context().Done()
		return stream.Context().Err()
	}
	select {
	case <-f.nextEvent:
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
	if err := stream.Send(ev("2-0", tetherv1.EventType_EVENT_TYPE_OFFLINE)); err != nil {
		return err
	}
	if req.GetAfterEventId() == "fail" {
		return status.Error(codes.Aborted, "watch fell behind")
	}
	return nil
}

// backend is a real gRPC server on 127.0.0.1 with the fake fleet and the
// health service.
type backend struct {
	addr   string
	fleet  *fakeFleet
	health *health.Server
	srv    *grpc.Server
}

func startBackend(t testing.TB, node string) *backend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{addr: lis.Addr().String(), fleet: newFakeFleet(node), health: health.NewServer(), srv: grpc.NewServer()}
	tetherv1.RegisterDeviceServiceServer(b.srv, b.fleet)
	grpc_health_v1.RegisterHealthServer(b.srv, b.health)
	go func() { _ = b.srv.Serve(lis) }()
	t.Cleanup(b.srv.Stop)
	return b
}

// logBuffer collects JSON log lines safely across goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// lines returns the log lines decoded as JSON objects.
func (l *logBuffer) lines(t testing.TB) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for line := range strings.Lines(l.buf.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// gw is a gateway under test, served on 127.0.0.1.
type gw struct {
	*gateway.Gateway
	url    string
	logs   *logBuffer
	stop   context.CancelFunc
	served chan error
}

// startGateway starts a gateway in front of the backends; cfg.Servers and
// cfg.Logger are filled in.
func startGateway(t testing.TB, cfg gateway.Config, backends ...*backend) *gw {
	t.Helper()
	for _, b := range backends {
		cfg.Servers = append(cfg.Servers, b.addr)
	}
	logs := &logBuffer{}
	cfg.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	g, err := gateway.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &gw{Gateway: g, url: "http://" + lis.Addr().String(), logs: logs, stop: cancel, served: make(chan error, 1)}
	go func() { s.served <- g.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-s.served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if err := g.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// do sends a request and returns the response with its body read.
func do(t testing.TB, method, url, contentType, body string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// errorBody is the gateway's JSON error.
type errorBody struct {
	Code    *int              `json:"code"`
	Message *string           `json:"message"`
	Details []json.RawMessage `json:"details"`
}

// decodeError checks that b is exactly {"code", "message", "details"} and
// returns it.
func decodeError(t testing.TB, b []byte) errorBody {
	t.Helper()
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		t.Fatalf("error body %q is not a JSON object: %v", b, err)
	}
	for _, k := range []string{"code", "message", "details"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("error body %s has no %q", b, k)
		}
	}
	if len(keys) != 3 {
		t.Errorf("error body %s has keys other than code, message, details", b)
	}
	var e errorBody
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	if e.Code == nil || e.Message == nil || e.Details == nil {
		t.Fatalf("error body %s: code, message or details is null", b)
	}
	return e
}

// eventually polls cond until it holds, failing the test after a bound. It is
// for state that propagates asynchronously over real sockets (connectivity,
// health watches), never for asserting how long something takes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("gave up waiting for %s", what)
}
