package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/gateway"
)

// startCappedBackend is startBackend with a cap on streams per connection,
// as tether-server has (--max-streams-per-conn).
func startCappedBackend(t *testing.T, node string, streams uint32) *backend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{addr: lis.Addr().String(), fleet: newFakeFleet(node), health: health.NewServer(), srv: grpc.NewServer(grpc.MaxConcurrentStreams(streams))}
	tetherv1.RegisterDeviceServiceServer(b.srv, b.fleet)
	grpc_health_v1.RegisterHealthServer(b.srv, b.health)
	go func() { _ = b.srv.Serve(lis) }()
	t.Cleanup(b.srv.Stop)
	return b
}

// openHeldWatch opens a watch the fake fleet holds open and waits for its
// first line.
func openHeldWatch(t *testing.T, ctx context.Context, url string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/devices:watch?afterEventId=hold", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp
	}
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestUnaryCallsAreNeverQueuedBehindWatchStreams: with the server's
// per-connection stream cap at 4 and every watch connection full, unary
// calls still go through at once (their own connection), and a watch beyond
// the gateway's cap is answered 429 instead of waiting.
func TestUnaryCallsAreNeverQueuedBehindWatchStreams(t *testing.T) {
	b := startCappedBackend(t, "n1", 4)
	g := startGateway(t, gateway.Config{WatchConns: 2, MaxWatches: 6}, b)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	for i := range 6 { // 2 connections x (4 streams - 1 health check)
		if resp := openHeldWatch(t, ctx, g.url); resp.StatusCode != http.StatusOK {
			t.Fatalf("watch %d: %s", i, resp.Status)
		}
	}
	for range 20 {
		rctx, rcancel := context.WithTimeout(t.Context(), 10*time.Second)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, g.url+"/v1/devices/d1", nil)
		resp, err := http.DefaultClient.Do(req)
		rcancel()
		if err != nil {
			t.Fatalf("GET while 6 watches fill every watch connection: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET while 6 watches are open: %s", resp.Status)
		}
	}
	resp := openHeldWatch(t, ctx, g.url)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("7th watch with MaxWatches 6: %s, want 429", resp.Status)
	}
}

// rawRequest writes head (request line and headers) on a new connection and
// returns the connection and a reader of the response.
func rawRequest(t *testing.T, url, head string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	return c, bufio.NewReader(c)
}

// TestRequestsWithoutCredentialsAreRefusedBeforeTheBodyIsRead: a POST
// announcing a 1 MB body, of which not a byte is sent, gets its 401 at
// once.
func TestRequestsWithoutCredentialsAreRefusedBeforeTheBodyIsRead(t *testing.T) {
	b := startBackend(t, "n1")
	g := startGateway(t, gateway.Config{RequireCredentials: true}, b)
	_, r := rawRequest(t, g.url, "POST /v1/devices/d1:command HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous POST: %s, want 401", resp.Status)
	}
	// With a key the request reaches the server, which decides.
	r2, body := do(t, http.MethodGet, g.url+"/v1/devices/d1", "", "", "Authorization", "Bearer k")
	if r2.StatusCode != http.StatusOK {
		t.Fatalf("GET with a key: %s %s", r2.Status, body)
	}
	// Health and the OpenAPI document need no key.
	if r3, _ := do(t, http.MethodGet, g.url+"/healthz", "", ""); r3.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %s", r3.Status)
	}
}

// TestConcurrentBodyReadsAreBounded: with MaxBodyReads 1, a client that
// trickles its body holds the only slot, and another POST is answered 429.
func TestConcurrentBodyReadsAreBounded(t *testing.T) {
	b := startBackend(t, "n1")
	g := startGateway(t, gateway.Config{MaxBodyReads: 1}, b)
	c, _ := rawRequest(t, g.url, "POST /v1/devices/d1:command HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
	defer c.Close()
	time.Sleep(200 * time.Millisecond) // the gateway starts reading it
	resp, body := do(t, http.MethodPost, g.url+"/v1/devices/d1:command", "application/json", `{"name":"echo"}`)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second body while one is read: %s %s, want 429", resp.Status, body)
	}
	fmt.Fprint(c, strings.Repeat(" ", 98)+"}")
}

func TestTheDefaultBodyLimitFitsTheLargestValidCommand(t *testing.T) {
	b := startBackend(t, "n1")
	g := startGateway(t, gateway.Config{}, b)
	// 64 args of 4096 bytes, every byte a control character JSON escapes
	// as \u0001: the largest SendCommand body the server accepts.
	arg := `"` + strings.Repeat(`\u0001`, 4096) + `"`
	args := strings.Repeat(arg+",", 63) + arg
	body := `{"name":"echo","args":[` + args + `],"timeout":"10s"}`
	resp, msg := do(t, http.MethodPost, g.url+"/v1/devices/d1:command", "application/json", body)
	if resp.StatusCode == http.StatusRequestEntityTooLarge {
		t.Fatalf("a %d-byte valid command was refused as too large: %s", len(body), msg)
	}
	over := `{"name":"echo","args":["` + strings.Repeat("a", gateway.DefaultMaxBodyBytes) + `"]}`
	if resp, _ := do(t, http.MethodPost, g.url+"/v1/devices/d1:command", "application/json", over); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("a body over the limit: %s, want 413", resp.Status)
	}
}
