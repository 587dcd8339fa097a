//go:build !linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// runWatchClient is the client process (portable version; Linux uses the
// epoll client of watchclient_linux.go): it opens n watches, records when
// each event arrives, and writes its report when it gets SIGTERM.
func runWatchClient(base string, n int, out string) {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	tr := &http.Transport{DisableKeepAlives: true, MaxConnsPerHost: 0}
	hc := &http.Client{Transport: tr}
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	rep := watchReport{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50) // opening rate
	for range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/devices:watch", nil)
			resp, err := hc.Do(req)
			if err != nil || resp.StatusCode != http.StatusOK {
				<-sem
				mu.Lock()
				rep.Failed++
				mu.Unlock()
				if err == nil {
					resp.Body.Close()
				}
				return
			}
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			first := true
			var lat []int64
			for sc.Scan() {
				now := time.Now()
				if first {
					first = false
					<-sem
					mu.Lock()
					rep.Open++
					mu.Unlock()
				}
				at, ok := eventTime(sc.Bytes())
				if !ok {
					continue
				}
				lat = append(lat, now.Sub(at).Milliseconds())
			}
			mu.Lock()
			rep.Events += len(lat)
			rep.Latencies = append(rep.Latencies, lat...)
			if ctx.Err() == nil {
				rep.Failed++ // ended before we stopped
			}
			mu.Unlock()
		}()
	}
	<-stop
	cancel()
	wg.Wait()
	b, _ := json.Marshal(rep)
	_ = os.WriteFile(out, b, 0o644)
}

// runWatchFloorRaw is the raw watch floor where it is not written (it uses
// Linux socket calls): the naive floor stands in.
func runWatchFloorRaw(addr string) { runWatchFloor(addr) }
