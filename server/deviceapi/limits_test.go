package deviceapi_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/deviceapi"
	"github.com/tetherhq/tether/server/session"
)

func keyName(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("x-key"); len(v) > 0 {
		return v[0]
	}
	return ""
}

// openWatch opens a watch as key and returns its first message's error.
func openWatch(t *testing.T, f *fixture, ctx context.Context, key string) error {
	t.Helper()
	w, err := f.api.WatchDevices(metadata.AppendToOutgoingContext(ctx, "x-key", key), &tetherv1.WatchDevicesRequest{})
	if err != nil {
		return err
	}
	_, err = w.Recv()
	return err
}

func TestWatchCapsPerKeyAndPerReplicaRefuseWithResourceExhausted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixtureAPI(t, session.Config{}, deviceapi.Config{MaxWatchers: 3, MaxWatchersPerKey: 2, KeyName: keyName})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		for _, k := range []string{"a", "a", "b"} {
			if err := openWatch(t, f, ctx, k); err != nil {
				t.Fatalf("watch for %s: %v", k, err)
			}
		}
		if err := openWatch(t, f, ctx, "c"); code(err) != codes.ResourceExhausted {
			t.Fatalf("4th watch on a replica capped at 3: %v, want RESOURCE_EXHAUSTED", err)
		}
		cancel()
		synctest.Wait()
		ctx2, cancel2 := context.WithCancel(t.Context())
		defer cancel2()
		for _, k := range []string{"a", "a"} {
			if err := openWatch(t, f, ctx2, k); err != nil {
				t.Fatalf("after the others closed, watch for %s: %v", k, err)
			}
		}
		err := openWatch(t, f, ctx2, "a")
		if code(err) != codes.ResourceExhausted {
			t.Fatalf("3rd watch of key a (cap 2): %v, want RESOURCE_EXHAUSTED", err)
		}
		t.Log(err)
	})
}

func TestListDevicesPagesAreBoundedByBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixtureAPI(t, session.Config{}, deviceapi.Config{MaxPageBytes: 400})
		for i := range 6 {
			f.runAgent(t, fmt.Sprintf("d%d", i), agentBehaviour{}, map[string]string{"site": "a-rather-long-label-value-to-fill-pages"})
		}
		seen := map[string]bool{}
		tok, pages := "", 0
		for {
			resp, err := f.api.ListDevices(t.Context(), &tetherv1.ListDevicesRequest{PageSize: 100, PageToken: tok})
			if err != nil {
				t.Fatal(err)
			}
			pages++
			if len(resp.GetDevices()) == 0 {
				t.Fatal("empty page")
			}
			for _, d := range resp.GetDevices() {
				if seen[d.GetDeviceId()] {
					t.Fatalf("%s listed twice", d.GetDeviceId())
				}
				seen[d.GetDeviceId()] = true
			}
			if tok = resp.GetNextPageToken(); tok == "" {
				break
			}
		}
		if len(seen) != 6 || pages < 2 {
			t.Fatalf("%d devices in %d pages; want 6 in several pages", len(seen), pages)
		}
	})
}

func TestManyWatchersShareTheEventFeed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, session.Config{})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var ws []tetherv1.DeviceService_WatchDevicesClient
		for range 200 {
			w, err := f.api.WatchDevices(ctx, &tetherv1.WatchDevicesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Recv(); err != nil { // the first heartbeat
				t.Fatal(err)
			}
			ws = append(ws, w)
		}
		f.runAgent(t, "fan", agentBehaviour{}, nil)
		for i, w := range ws {
			for {
				m, err := w.Recv()
				if err != nil {
					t.Fatalf("watcher %d: %v", i, err)
				}
				if e := m.GetEvent(); e.GetType() == tetherv1.EventType_EVENT_TYPE_ONLINE && e.GetDeviceId() == "fan" {
					break
				}
			}
		}
	})
}

// TestLocalWatchersEncodeEachEventOnce: WatchLocal (the in-process gateway's
// path) hands every watcher the same line for an event of the feed, encoded
// once for all of them, whether the watcher's goroutine writes it (send's
// cache) or the feed's fan-out does (write; one that refuses falls back to
// send); messages of one watcher alone (the first heartbeat) come without a
// cache.
func TestLocalWatchersEncodeEachEventOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, session.Config{})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		const n = 60
		var encodes, directs atomic.Int64
		var wg sync.WaitGroup
		got := make(chan []byte, n)
		encode := func(resp *tetherv1.WatchDevicesResponse) []byte {
			encodes.Add(1)
			e := resp.GetEvent()
			return []byte(e.GetType().String() + "|" + e.GetDeviceId() + "|" + e.GetEventId())
		}
		const want = "EVENT_TYPE_ONLINE|once|"
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				wctx, stop := context.WithCancel(ctx)
				defer stop()
				send := func(resp *tetherv1.WatchDevicesResponse, cache func(func() []byte) []byte, _ bool) error {
					e := resp.GetEvent()
					if e.GetType() == tetherv1.EventType_EVENT_TYPE_HEARTBEAT {
						if cache != nil {
							t.Error("a heartbeat came with a shared cache")
						}
						return nil
					}
					if cache == nil {
						t.Errorf("event %s came without a shared cache", e.GetType())
						return nil
					}
					line := cache(func() []byte { return encode(resp) })
					if strings.HasPrefix(string(line), want) {
						got <- line
						stop()
					}
					return nil
				}
				var write deviceapi.LocalWrite
				switch i % 3 {
				case 1: // takes every batch from the fan-out
					write = func(lines [][]byte) bool {
						directs.Add(1)
						for _, l := range lines {
							if strings.HasPrefix(string(l), want) {
								got <- l
								stop()
							}
						}
						return true
					}
				case 2: // never can: the events go to send
					write = func([][]byte) bool { return false }
				}
				err := f.svc.WatchLocal(wctx, &tetherv1.WatchDevicesRequest{}, send, encode, write)
				if status.Code(err) != codes.Canceled {
					t.Errorf("WatchLocal ended with %v, want CANCELED", err)
				}
			}()
		}
		synctest.Wait() // every watcher has joined the feed
		f.runAgent(t, "once", agentBehaviour{}, nil)
		first := <-got
		for range n - 1 {
			if l := <-got; &l[0] != &first[0] {
				t.Fatal("watchers got different encodings of one event")
			}
		}
		wg.Wait()
		if c := encodes.Load(); c != 1 {
			t.Fatalf("the event was encoded %d times for %d watchers, want once", c, n)
		}
		if directs.Load() == 0 {
			t.Fatal("no batch was written by the fan-out")
		}
	})
}

// TestWatchOfAClientThatReadsNothingEndsAfterTheSendTimeout: a gRPC client
// that opens a watch and reads nothing makes flow control hold the
// server's Send (a snapshot far larger than the stream's window); the watch
// ends after WatchSendTimeout and frees its slot on a replica capped at one
// watch.
func TestWatchOfAClientThatReadsNothingEndsAfterTheSendTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixtureAPI(t, session.Config{}, deviceapi.Config{MaxWatchers: 1, WatchSendTimeout: 30 * time.Second})
		labels := map[string]string{}
		for i := range 60 {
			labels[fmt.Sprintf("k%02d", i)] = strings.Repeat("v", 250)
		}
		for i := range 40 { // 40 devices of ≈ 16 KiB: 640 KiB of snapshot
			if _, err := f.api.PreRegisterDevice(t.Context(), &tetherv1.PreRegisterDeviceRequest{DeviceId: fmt.Sprintf("d%d", i), Labels: labels}); err != nil {
				t.Fatal(err)
			}
		}
		// A client with fixed 64 KiB windows (no BDP growth) that never reads.
		conn, err := grpc.NewClient("passthrough:///bufnet",
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return f.lis.DialContext(ctx) }),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		if _, err := tetherv1.NewDeviceServiceClient(conn).WatchDevices(ctx, &tetherv1.WatchDevicesRequest{IncludeSnapshot: true}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if err := openWatch(t, f, t.Context(), ""); code(err) != codes.ResourceExhausted {
			t.Fatalf("a second watch while the stalled one holds the only slot: %v, want RESOURCE_EXHAUSTED", err)
		}
		time.Sleep(31 * time.Second)
		synctest.Wait()
		wctx, wcancel := context.WithCancel(t.Context())
		defer wcancel()
		if err := openWatch(t, f, wctx, ""); err != nil {
			t.Fatalf("a watch after the stalled one's send timeout: %v", err)
		}
	})
}
