package deviceapi_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/deviceapi"
	"github.com/tetherhq/tether/server/session"
)

// BenchmarkGRPCWatchDelivery is the cost of one event's delivery to one
// gRPC WatchDevices stream (in-process gRPC over bufconn, 200 watchers),
// with each Send unguarded (WatchSendTimeout < 0) and timed by the stream's
// send guard (the default). Reproduce with:
//
//	go test -run '^$' -bench GRPCWatchDelivery -count 5 ./server/deviceapi
func BenchmarkGRPCWatchDelivery(b *testing.B) {
	for _, c := range []struct {
		name    string
		timeout time.Duration
	}{{"unguarded", -1}, {"guarded", 0}} {
		b.Run(c.name, func(b *testing.B) {
			defer slog.SetDefault(slog.Default())
			slog.SetDefault(slog.New(slog.DiscardHandler)) // the hub's lines
			const watchers = 200
			f := newFixtureAPI(b, session.Config{}, deviceapi.Config{WatchSendTimeout: c.timeout})
			ctx, cancel := context.WithCancel(b.Context())
			defer cancel()
			got := make(chan struct{}, watchers)
			var wg sync.WaitGroup
			for range watchers {
				w, err := f.api.WatchDevices(ctx, &tetherv1.WatchDevicesRequest{})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := w.Recv(); err != nil { // the first HEARTBEAT or event: the watch is open
					b.Fatal(err)
				}
				wg.Go(func() {
					for {
						resp, err := w.Recv()
						if err != nil {
							return
						}
						if resp.GetEvent().GetType() == tetherv1.EventType_EVENT_TYPE_REGISTERED {
							got <- struct{}{}
						}
					}
				})
			}
			b.ResetTimer()
			for i := range b.N {
				if _, err := f.api.PreRegisterDevice(ctx, &tetherv1.PreRegisterDeviceRequest{DeviceId: fmt.Sprintf("b%d", i)}); err != nil {
					b.Fatal(err)
				}
				for range watchers {
					<-got
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*watchers), "ns/delivery")
			cancel()
			wg.Wait()
		})
	}
}
