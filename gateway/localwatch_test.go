package gateway_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/gateway"
)

// localWatchHandler is a gateway whose LocalWatch is watch.
func localWatchHandler(t *testing.T, watch gateway.LocalWatch) http.Handler {
	t.Helper()
	return localWatchHandlerWith(t, gateway.Config{}, watch)
}

// localWatchHandlerWith is localWatchHandler with cfg's other fields.
func localWatchHandlerWith(t *testing.T, cfg gateway.Config, watch gateway.LocalWatch) http.Handler {
	t.Helper()
	b := startBackend(t, "node-a")
	conn, err := grpc.NewClient(b.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	cfg.Logger, cfg.LocalWatch = slog.New(slog.DiscardHandler), watch
	h, err := gateway.NewHandler(t.Context(), conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// localWatchServer serves localWatchHandler over HTTP/1.1.
func localWatchServer(t *testing.T, watch gateway.LocalWatch) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(localWatchHandler(t, watch))
	t.Cleanup(srv.Close)
	return srv
}

func event(id string) *tetherv1.WatchDevicesResponse {
	return &tetherv1.WatchDevicesResponse{Event: &tetherv1.DeviceEvent{EventId: id, Type: tetherv1.EventType_EVENT_TYPE_ONLINE, DeviceId: "d-" + id}}
}

// TestLocalWatchOverHTTP1IsWrittenDirectly: an HTTP/1.1 watch is taken over
// after its first message; lines written by the feed's direct write and by
// send interleave in order on one chunked response that ends cleanly, and a
// client that leaves ends the watch.
func TestLocalWatchOverHTTP1IsWrittenDirectly(t *testing.T) {
	ended := make(chan error, 1)
	srv := localWatchServer(t, func(ctx context.Context, _ metadata.MD, _ *tetherv1.WatchDevicesRequest,
		send func(*tetherv1.WatchDevicesResponse, func(func() []byte) []byte, bool) error,
		encode func(*tetherv1.WatchDevicesResponse) []byte, write func([][]byte) bool) error {
		if write == nil || encode == nil {
			t.Error("no direct write for an HTTP/1.1 watch")
			return nil
		}
		if write([][]byte{encode(event("early"))}) {
			t.Error("a direct write before the first message was taken")
		}
		if err := send(&tetherv1.WatchDevicesResponse{Event: &tetherv1.DeviceEvent{Type: tetherv1.EventType_EVENT_TYPE_HEARTBEAT}}, nil, false); err != nil {
			return err
		}
		if !write([][]byte{encode(event("1")), encode(event("2"))}) {
			t.Error("the direct write of a taken-over watch was refused")
		}
		if err := send(event("3"), nil, true); err != nil { // queued: assembled, not yet flushed
			return err
		}
		if write([][]byte{encode(event("x"))}) {
			t.Error("a direct write was taken while send was assembling a chunk")
		}
		if err := send(event("4"), nil, false); err != nil {
			return err
		}
		if !write([][]byte{encode(event("5"))}) {
			t.Error("the direct write after a flush was refused")
		}
		<-ctx.Done() // the client leaves
		ended <- ctx.Err()
		return ctx.Err()
	})
	resp, err := http.Get(srv.URL + "/v1/devices:watch")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !resp.Close || resp.Header.Get("Content-Type") == "" {
		t.Fatalf("status %d, close %v, headers %v", resp.StatusCode, resp.Close, resp.Header)
	}
	lines := bufio.NewReader(resp.Body)
	for _, want := range []string{"HEARTBEAT", `"1"`, `"2"`, `"3"`, `"4"`, `"5"`} {
		l, err := lines.ReadString('\n')
		if err != nil || !strings.Contains(l, want) {
			t.Fatalf("line %q (%v), want one with %s", l, err, want)
		}
	}
	resp.Body.Close()
	watchEnds(t, ended, "when its client left")
}

// watchEnds waits for a watch to report its end on ended, with an error.
func watchEnds(t *testing.T, ended <-chan error, when string) {
	t.Helper()
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("the watch ended without an error")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the watch did not end " + when)
	}
}

// TestLocalWatchTakenOverEndsWithItsErrorLine: a taken-over watch that the
// server ends gets the same {"error":…} line and a complete chunked body.
func TestLocalWatchTakenOverEndsWithItsErrorLine(t *testing.T) {
	srv := localWatchServer(t, func(ctx context.Context, _ metadata.MD, _ *tetherv1.WatchDevicesRequest,
		send func(*tetherv1.WatchDevicesResponse, func(func() []byte) []byte, bool) error,
		encode func(*tetherv1.WatchDevicesResponse) []byte, write func([][]byte) bool) error {
		if err := send(event("1"), nil, false); err != nil {
			return err
		}
		if !write([][]byte{encode(event("2"))}) {
			t.Error("direct write refused")
		}
		return status.Error(codes.Unavailable, "server is shutting down; reconnect and resume with after_event_id")
	})
	resp, err := http.Get(srv.URL + "/v1/devices:watch")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body) // fails unless the chunked body ends properly
	if err != nil {
		t.Fatalf("body: %v (%q)", err, body)
	}
	got := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	if len(got) != 3 || !strings.Contains(got[0], `"1"`) || !strings.Contains(got[1], `"2"`) || !strings.Contains(got[2], `"error"`) || !strings.Contains(got[2], `"code":14`) {
		t.Fatalf("body %q", body)
	}
}

// TestLocalWatchOverHTTP2IsNotTakenOver: only HTTP/1.1 over plain TCP is
// taken over; an HTTP/2 watch keeps the ResponseWriter and no direct write.
func TestLocalWatchOverHTTP2IsNotTakenOver(t *testing.T) {
	h := localWatchHandler(t, func(ctx context.Context, _ metadata.MD, _ *tetherv1.WatchDevicesRequest,
		send func(*tetherv1.WatchDevicesResponse, func(func() []byte) []byte, bool) error,
		_ func(*tetherv1.WatchDevicesResponse) []byte, write func([][]byte) bool) error {
		if write != nil {
			t.Error("a direct write for an HTTP/2 watch")
		}
		return send(event("1"), nil, false)
	})
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/v1/devices:watch")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.ProtoMajor != 2 || !strings.Contains(string(body), `"1"`) {
		t.Fatalf("proto %s, body %q", resp.Proto, body)
	}
}

// stallingWatch is a LocalWatch that writes large events, directly when it
// can and through send otherwise, until a write fails; it reports how the
// watch ended on ended.
func stallingWatch(ended chan<- error) gateway.LocalWatch {
	return func(ctx context.Context, _ metadata.MD, _ *tetherv1.WatchDevicesRequest,
		send func(*tetherv1.WatchDevicesResponse, func(func() []byte) []byte, bool) error,
		encode func(*tetherv1.WatchDevicesResponse) []byte, write func([][]byte) bool) error {
		big := func(i int) *tetherv1.WatchDevicesResponse {
			ev := event(strconv.Itoa(i))
			ev.Event.Device = &tetherv1.Device{Info: &tetherv1.DeviceInfo{Hostname: strings.Repeat("h", 32<<10)}}
			return ev
		}
		err := send(big(0), nil, false)
		for i := 1; err == nil && i < 100_000 && ctx.Err() == nil; i++ {
			if write != nil && write([][]byte{encode(big(i))}) {
				continue
			}
			err = send(big(i), nil, false)
		}
		ended <- err
		return err
	}
}

// stallAfterHeaders sends a request for target on conn, reads the
// response's first bytes and then reads nothing more.
func stallAfterHeaders(t *testing.T, conn net.Conn, target string) {
	t.Helper()
	if _, err := io.WriteString(conn, "GET "+target+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Read(make([]byte, 512)); err != nil {
		t.Fatal(err)
	}
}

// TestLocalWatchClientThatStopsReadingIsDisconnected: a client that reads
// nothing more fills its socket buffers; the watch's writes fail after
// WatchWriteTimeout and the watch ends, on a taken-over connection (direct
// writes, a partly written chunk, send) and through the ResponseWriter
// (HTTPS, HTTP/2).
func TestLocalWatchClientThatStopsReadingIsDisconnected(t *testing.T) {
	cfg := gateway.Config{WatchWriteTimeout: 200 * time.Millisecond}
	const when = "when its client stopped reading"
	t.Run("taken over", func(t *testing.T) {
		ended := make(chan error, 1)
		srv := httptest.NewServer(localWatchHandlerWith(t, cfg, stallingWatch(ended)))
		t.Cleanup(srv.Close)
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.(*net.TCPConn).SetReadBuffer(4096)
		stallAfterHeaders(t, conn, "/v1/devices:watch")
		watchEnds(t, ended, when)
	})
	t.Run("https", func(t *testing.T) {
		ended := make(chan error, 1)
		srv := httptest.NewTLSServer(localWatchHandlerWith(t, cfg, stallingWatch(ended)))
		t.Cleanup(srv.Close)
		conn, err := tls.Dial("tcp", srv.Listener.Addr().String(), srv.Client().Transport.(*http.Transport).TLSClientConfig)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		stallAfterHeaders(t, conn, "/v1/devices:watch")
		watchEnds(t, ended, when)
	})
	t.Run("http2", func(t *testing.T) {
		ended := make(chan error, 1)
		srv := httptest.NewUnstartedServer(localWatchHandlerWith(t, cfg, stallingWatch(ended)))
		srv.EnableHTTP2 = true
		srv.StartTLS()
		t.Cleanup(srv.Close)
		resp, err := srv.Client().Get(srv.URL + "/v1/devices:watch")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("proto %s", resp.Proto)
		}
		if _, err := resp.Body.Read(make([]byte, 512)); err != nil {
			t.Fatal(err)
		}
		watchEnds(t, ended, when) // the client's stream window fills, then the server's writes wait
	})
}

// TestProxiedWatchClientThatStopsReadingIsDisconnected: the same through
// tether-gateway's proxied watch (runtime.ForwardResponseStream): the
// write fails after WatchWriteTimeout, the handler returns and the server's
// stream is cancelled.
func TestProxiedWatchClientThatStopsReadingIsDisconnected(t *testing.T) {
	b := startBackend(t, "node-a")
	g := startGateway(t, gateway.Config{WatchWriteTimeout: 200 * time.Millisecond}, b)
	conn, err := net.Dial("tcp", strings.TrimPrefix(g.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	stallAfterHeaders(t, conn, "/v1/devices:watch?afterEventId=flood")
	select {
	case err := <-b.fleet.floodEnded:
		if status.Code(err) != codes.Canceled {
			t.Fatalf("the server's stream ended with %v, want CANCELED", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the proxied watch of a client that stopped reading did not end")
	}
}
