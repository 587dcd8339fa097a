package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

var (
	watchFloorAt  = flag.String("watch-floor", "", "internal: serve the naive watch floor on this address")
	watchFloorRaw = flag.Bool("watch-floor-raw", false, "internal: serve the raw watch floor (with -watch-floor)")
)

// floorLine is an event line of the same shape and size as tether-server's
// (one {"result":{"event":…}} line of the JSON gateway's watch stream).
func floorLine(id, typ string, at time.Time) []byte {
	return fmt.Appendf(nil, `{"result":{"event":{"eventId":%q,"type":%q,"deviceId":"churn-12","leaseId":"1796179544684612","reason":"DISCONNECT_REASON_UNSPECIFIED","time":%q,"node":"bench-1"}}}`+"\n",
		id, typ, at.UTC().Format(time.RFC3339Nano))
}

// runWatchFloor is the watch floor: the same watch stream written the
// obvious way with net/http and nothing else: a handler goroutine per
// watcher with a buffered channel, and POST /publish?n= stamps n events and
// hands each to every watcher's channel under one lock. No registry, no
// gRPC, no authentication, no encoding per event. /metrics reports
// tether_feed_watchers like tether-server does.
func runWatchFloor(addr string) {
	var (
		mu       sync.Mutex
		watchers = map[chan []byte]struct{}{}
		seq      atomic.Int64
	)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/devices:watch", func(w http.ResponseWriter, r *http.Request) {
		ch := make(chan []byte, 64)
		mu.Lock()
		watchers[ch] = struct{}{}
		mu.Unlock()
		defer func() {
			mu.Lock()
			delete(watchers, ch)
			mu.Unlock()
		}()
		w.Header().Set("Content-Type", "application/json")
		rc := http.NewResponseController(w)
		if _, err := w.Write(floorLine("", "EVENT_TYPE_HEARTBEAT", time.Now())); err != nil || rc.Flush() != nil {
			return
		}
		for {
			select {
			case l := <-ch:
				if _, err := w.Write(l); err != nil || rc.Flush() != nil {
					return
				}
			case <-r.Context().Done():
				return
			}
		}
	})
	mux.HandleFunc("POST /publish", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		for range min(max(n, 1), 100) {
			l := floorLine(fmt.Sprintf("1-%d", seq.Add(1)), "EVENT_TYPE_ONLINE", time.Now())
			mu.Lock()
			for ch := range watchers {
				select {
				case ch <- l:
				default: // a slow watcher misses it
				}
			}
			mu.Unlock()
		}
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		n := len(watchers)
		mu.Unlock()
		fmt.Fprintf(w, "tether_feed_watchers %d\n", n)
	})
	must((&http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}).ListenAndServe())
}

// watchFloorRun is what the floor measured.
type watchFloorRun struct {
	opened         float64
	rep            watchReport
	events         int     // events published in the window
	cpu, clientCPU float64 // seconds in the window
	p50, p99       time.Duration
}

// watchFloorPhase runs the floor with the same watch clients and the same
// event rate (rate sessions/s, two events each, as the churn makes) for
// window.
func watchFloorPhase(n, k int, rate float64, window time.Duration, raw bool) watchFloorRun {
	self, err := os.Executable()
	must(err)
	addr := freePort()
	p := start(self, "-watch-floor", addr, "-watch-floor-raw="+strconv.FormatBool(raw))
	defer stopProc(p, 10*time.Second)
	waitListening(addr)
	base := "http://" + addr
	wf := openWatchers("floor", base, addr, n, k)
	run := watchFloorRun{opened: wf.opened}
	cpu0, ccpu0 := cpuSeconds(p.Process.Pid), wf.cpu()
	ctx, cancel := context.WithTimeout(context.Background(), window)
	t := time.NewTicker(time.Duration(float64(time.Second) / max(rate, 0.01)))
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-t.C:
			if resp, err := http.Post(base+"/publish?n=2", "text/plain", nil); err == nil {
				resp.Body.Close()
				run.events += 2
			}
		}
	}
	t.Stop()
	cancel()
	run.cpu, run.clientCPU = cpuSeconds(p.Process.Pid)-cpu0, wf.cpu()-ccpu0
	run.rep = wf.collect()
	run.p50, run.p99 = pctMS(run.rep.Latencies, 50), pctMS(run.rep.Latencies, 99)
	return run
}
