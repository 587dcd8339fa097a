package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// floorServer is the bare grpc-go floor: an AgentService that answers Hello
// with HelloAck and then only holds the stream (no registry, no pings, no
// metrics), with the same transport buffer sizes tether-server uses. The
// memory it needs per held stream is what grpc-go itself costs.
type floorServer struct {
	tetherv1.UnimplementedAgentServiceServer
}

func (floorServer) Connect(stream tetherv1.AgentService_ConnectServer) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	if err := stream.Send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_HelloAck{HelloAck: &tetherv1.HelloAck{LeaseId: 1}}}); err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			return err
		}
	}
}

// runFloor serves the floor server on addr until killed.
func runFloor(addr string) {
	l, err := net.Listen("tcp", addr)
	must(err)
	s := grpc.NewServer(grpc.Creds(insecure.NewCredentials()), grpc.ReadBufferSize(8<<10), grpc.WriteBufferSize(8<<10))
	tetherv1.RegisterAgentServiceServer(s, floorServer{})
	must(s.Serve(l))
}

// floor measures RSS per held session for the bare grpc-go floor and for
// tether-server (embedded store, pings running) in the same run.
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
