package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// floorServer is the naive grpc-go floor: the same work as tether-server's
// session path written the obvious way, with nothing else. Connect answers
// Hello with HelloAck (no registry, no admission, no metrics), then — when
// ping > 0 — a second goroutine per stream sends a Ping every interval
// (first one at a random point of the first interval, then the interval
// shortened by 5–10 %, like tether-server) while the handler reads the
// Pongs. SendCommand (DeviceService) looks the device up in a map, sends
// the Command on its stream and waits for the CommandResult the handler
// reads. Same transport buffer sizes as tether-server's baseline (8 KiB).
type floorServer struct {
	tetherv1.UnimplementedAgentServiceServer
	tetherv1.UnimplementedDeviceServiceServer

	ping     time.Duration
	sessions sync.Map // device id -> *floorSession
	live     atomic.Int64
	pongs    atomic.Int64
	pings    atomic.Int64
	cmdSeq   atomic.Uint64
}

type floorSession struct {
	sendMu  sync.Mutex // one Send at a time (pinger and commands)
	stream  tetherv1.AgentService_ConnectServer
	pending sync.Map // command id -> chan *tetherv1.CommandResult
}

func (fs *floorSession) send(m *tetherv1.ConnectResponse) error {
	fs.sendMu.Lock()
	defer fs.sendMu.Unlock()
	return fs.stream.Send(m)
}

func (f *floorServer) Connect(stream tetherv1.AgentService_ConnectServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	id := first.GetHello().GetDeviceId()
	if id == "" {
		return status.Error(codes.InvalidArgument, "first message must be Hello")
	}
	if err := stream.Send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_HelloAck{HelloAck: &tetherv1.HelloAck{
		LeaseId: 1, ServerNode: "floor", PingInterval: durationpb.New(f.ping), PingTimeout: durationpb.New(5 * time.Second),
		LivenessMode: tetherv1.LivenessMode_LIVENESS_MODE_APP_PONG,
	}}}); err != nil {
		return err
	}
	fs := &floorSession{stream: stream}
	f.sessions.Store(id, fs)
	defer f.sessions.CompareAndDelete(id, fs)
	f.live.Add(1)
	defer f.live.Add(-1)
	if f.ping > 0 {
		ctx := stream.Context()
		go func() {
			t := time.NewTimer(time.Duration(rand.Int64N(int64(f.ping))) + 1)
			defer t.Stop()
			for seq := uint64(1); ; seq++ {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				if fs.send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_Ping{Ping: &tetherv1.Ping{Seq: seq, SentAt: timestamppb.Now()}}}) != nil {
					return
				}
				f.pings.Add(1)
				t.Reset(time.Duration(float64(f.ping) * (0.9 + 0.05*rand.Float64())))
			}
		}()
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		switch m := m.Msg.(type) {
		case *tetherv1.ConnectRequest_Pong:
			f.pongs.Add(1)
		case *tetherv1.ConnectRequest_CommandResult:
			if ch, ok := fs.pending.LoadAndDelete(m.CommandResult.GetCommandId()); ok {
				ch.(chan *tetherv1.CommandResult) <- m.CommandResult
			}
		}
	}
}

func (f *floorServer) SendCommand(ctx context.Context, req *tetherv1.SendCommandRequest) (*tetherv1.SendCommandResponse, error) {
	v, ok := f.sessions.Load(req.GetDeviceId())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "device %s not connected", req.GetDeviceId())
	}
	fs := v.(*floorSession)
	id := strconv.FormatUint(f.cmdSeq.Add(1), 36)
	ch := make(chan *tetherv1.CommandResult, 1)
	fs.pending.Store(id, ch)
	defer fs.pending.Delete(id)
	if err := fs.send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_Command{Command: &tetherv1.Command{
		CommandId: id, Name: req.GetName(), Args: req.GetArgs(), Timeout: req.GetTimeout(),
	}}}); err != nil {
		return nil, status.Errorf(codes.Aborted, "send: %v", err)
	}
	select {
	case r := <-ch:
		return &tetherv1.SendCommandResponse{CommandId: id, LeaseId: 1, Node: "floor", ExitCode: r.GetExitCode(), Output: r.GetOutput(),
			Error: r.GetError(), Duration: r.GetDuration(), CompletedAt: timestamppb.Now()}, nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// runFloor serves the floor server on addr until killed; with metricsAddr
// it also serves its counters in the Prometheus text format there.
func runFloor(addr, metricsAddr string, ping time.Duration) {
	l, err := net.Listen("tcp", addr)
	must(err)
	f := &floorServer{ping: ping}
	if metricsAddr != "" {
		go func() {
			must(http.ListenAndServe(metricsAddr, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				fmt.Fprintf(w, "floor_sessions %d\nfloor_pings_total %d\nfloor_pongs_total %d\ngo_memstats_heap_inuse_bytes %d\ngo_memstats_stack_inuse_bytes %d\n",
					f.live.Load(), f.pings.Load(), f.pongs.Load(), ms.HeapInuse, ms.StackInuse)
			})))
		}()
	}
	s := grpc.NewServer(grpc.Creds(insecure.NewCredentials()), grpc.ReadBufferSize(8<<10), grpc.WriteBufferSize(8<<10))
	tetherv1.RegisterAgentServiceServer(s, f)
	tetherv1.RegisterDeviceServiceServer(s, f)
	must(s.Serve(l))
}

// floor measures RSS per held session for the bare grpc-go floor (holding
// only, no pings) and for tether-server (embedded store, pings running) in
// the same run. The floors scenario supersedes it.
func floor() {
	n := *floorN
	logf("scenario floor: %d sessions on a bare grpc-go server, then on tether-server", n)
	self, err := os.Executable()
	must(err)
	measure := func(name string, startServer func(addr string) *exec.Cmd) (float64, int) {
		defer stopAll()
		addr := freePort()
		p := startServer(addr)
		waitListening(addr)
		time.Sleep(300 * time.Millisecond)
		base := rssBytes(p.Process.Pid)
		lgs, _ := loadgens(n, []string{addr}, "floor-"+name)
		deadline := time.Now().Add(3 * time.Minute)
		for countEstablished(addr) < n && time.Now().Before(deadline) {
			time.Sleep(500 * time.Millisecond)
		}
		time.Sleep(30 * time.Second) // three ping rounds
		held := countEstablished(addr)
		rss := rssBytes(p.Process.Pid)
		for _, c := range lgs {
			stopProc(c, 30*time.Second)
		}
		return float64(rss-base) / float64(max(held, 1)) / 1000, held
	}
	bare, heldBare := measure("bare", func(addr string) *exec.Cmd { return start(self, "-floor", addr) })
	ours, heldOurs := measure("tether", func(addr string) *exec.Cmd {
		return start("tether-server", "--listen", addr, "--log-level", "warn")
	})
	fmt.Println("## Memory per held session: tether-server against the bare grpc-go floor")
	fmt.Println()
	fmt.Printf("Command: `go run ./bench -scenarios floor` — %d loadgen sessions held for 30 s by (a) a bare grpc-go AgentService that only answers Hello and holds the stream (`bench/floor.go`, same transport buffer sizes) and (b) tether-server with the embedded store and 10 s pings; RSS growth divided by the sessions held, same run, same machine.\n\n", n)
	fmt.Println("| server | sessions held | RSS per session |")
	fmt.Println("|---|---|---|")
	fmt.Printf("| bare grpc-go floor | %d | %.1f KB |\n", heldBare, bare)
	fmt.Printf("| tether-server | %d | %.1f KB |\n", heldOurs, ours)
	fmt.Printf("| ratio tether / floor | | %.2f× (+%.1f KB) |\n", ours/bare, ours-bare)
	fmt.Println()
}

// countEstablished counts ESTABLISHED TCP connections to addr's port, from
// /proc/net/tcp (the floor server has no metrics endpoint).
func countEstablished(addr string) int {
	_, port, _ := net.SplitHostPort(addr)
	var p int
	fmt.Sscan(port, &p)
	want := fmt.Sprintf(":%04X", p)
	n := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(l)
			// local address, state 01 = ESTABLISHED
			if len(fs) > 3 && strings.HasSuffix(fs[1], want) && fs[3] == "01" {
				n++
			}
		}
	}
	return n
}
