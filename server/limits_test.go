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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/tetherhq/tether/agent"
	"github.com/tetherhq/tether/server"
	"github.com/tetherhq/tether/server/registry/memstore"
)

// watchedConn records when the server ended the connection.
type watchedConn struct {
	net.Conn
	ended *atomic.Bool
}

func (c watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.ended.Store(true)
	}
	return n, err
}

// TestIdleConnectionsAreClosedButAgentsNeverAre runs the shipped server
// configuration for an hour of fake time with a real agent and a client
// connection that made one call and then held its socket: the idle one is
// closed after the idle timeout, the agent keeps its first session.
func TestIdleConnectionsAreClosedButAgentsNeverAre(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
		lis := bufconn.Listen(1 << 20)
		ctx, cancel := context.WithCancel(context.Background())
		srv, err := server.New(ctx, server.Config{Listener: lis, Store: memstore.New(memstore.Options{}), Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- srv.Run(ctx) }()

		var agentEnded, idleEnded atomic.Bool
		dialer := func(ended *atomic.Bool) grpc.DialOption {
			return grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				c, err := lis.DialContext(ctx)
				return watchedConn{c, ended}, err
			})
		}
		var sessions atomic.Int32
		a, err := agent.New(agent.Config{
			ServerAddr: "passthrough:///bufnet", DeviceID: "idle-1", Logger: quiet,
			DialOptions: []grpc.DialOption{dialer(&agentEnded)},
			OnSession:   func(uint64) { sessions.Add(1) },
		})
		if err != nil {
			t.Fatal(err)
		}
		agentDone := make(chan error, 1)
		go func() { agentDone <- a.Run(ctx) }()

		idle, err := grpc.NewClient("passthrough:///bufnet", dialer(&idleEnded), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer idle.Close()
		if _, err := healthpb.NewHealthClient(idle).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(server.DefaultIdleConnTimeout / 2)
		synctest.Wait()
		if idleEnded.Load() {
			t.Fatal("the idle connection was closed before the idle timeout")
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		if !idleEnded.Load() {
			t.Fatal("a connection without a stream is still open after an hour")
		}
		if agentEnded.Load() || sessions.Load() != 1 {
			t.Fatalf("the agent's connection ended (%v) or it opened %d sessions in an hour; want its first connection and session kept", agentEnded.Load(), sessions.Load())
		}
		cancel()
		<-agentDone
		if err := <-served; err != nil {
			t.Fatal(err)
		}
	})
}

// TestLargeHeaderListsAreRefused: a request whose metadata exceeds
// --max-header-list-size fails before any handler runs.
func TestLargeHeaderListsAreRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
		lis := bufconn.Listen(1 << 20)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		srv, err := server.New(ctx, server.Config{Listener: lis, Store: memstore.New(memstore.Options{}), Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		go srv.Run(ctx)
		conn, err := grpc.NewClient("passthrough:///bufnet",
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
			grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		hc := healthpb.NewHealthClient(conn)
		small := metadata.AppendToOutgoingContext(ctx, "x-pad", strings.Repeat("a", 1<<10))
		if _, err := hc.Check(small, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("1 KiB of metadata: %v", err)
		}
		big := metadata.AppendToOutgoingContext(ctx, "x-pad", strings.Repeat("a", 64<<10))
		_, err = hc.Check(big, &healthpb.HealthCheckRequest{})
		if code := status.Code(err); code == codes.OK {
			t.Fatal("64 KiB of metadata was accepted")
		}
		t.Log(err)
	})
}

// TestConnectionsPerIPAreCapped: with MaxConnsPerIP, connections beyond the
// cap from one address are closed at accept; closing one frees a slot.
func TestConnectionsPerIPAreCapped(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := server.Config{Listen: "127.0.0.1:0", Store: memstore.New(memstore.Options{}), Logger: quiet}
	cfg.Limits.MaxConnsPerIP = 2
	srv, err := server.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// closedByServer reports whether the server closed c (EOF) rather than
	// leaving it open (the read deadline passes).
	closedByServer := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 1)
		_, err := c.Read(buf)
		var ne net.Error
		if err == nil {
			return false // the server spoke first (HTTP/2 settings): open
		}
		if errorsAs(err, &ne) && ne.Timeout() {
			return false
		}
		return true
	}
	a, b := dial(), dial()
	defer a.Close()
	defer b.Close()
	third := dial()
	defer third.Close()
	if !closedByServer(third) {
		t.Fatal("a third connection from one IP with MaxConnsPerIP=2 stayed open")
	}
	if closedByServer(a) {
		t.Fatal("a connection within the cap was closed")
	}
	a.Close()
	time.Sleep(100 * time.Millisecond) // the server notices the close
	fourth := dial()
	defer fourth.Close()
	if closedByServer(fourth) {
		t.Fatal("after one closed, a new connection was refused")
	}
}

func errorsAs(err error, target *net.Error) bool {
	ne, ok := err.(net.Error)
	if ok {
		*target = ne
	}
	return ok
}
