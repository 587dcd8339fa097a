package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

var (
	watchersN       = flag.Int("watchers", 5000, "HTTP watchers of the watchers scenario (one replica)")
	watchClients    = flag.Int("watch-clients", 5, "client processes the watchers are spread over (each below the 20,000 open-file cap)")
	watchChurn      = flag.Float64("watch-churn", 2, "device sessions opened and closed per second during the watchers scenario (2 events each)")
	watchWindow     = flag.Duration("watch-window", 30*time.Second, "measuring window of each phase of the watchers scenario")
	watchClientOf   = flag.String("watch-client", "", "internal: open -watch-client-n watches on this base URL and report latencies to -watch-client-out")
	watchClientN    = flag.Int("watch-client-n", 0, "internal: watches of one client process")
	watchClientNice = flag.Int("watch-client-nice", 0, "nice value of the watch client processes (19: the machine's CPU goes to the servers first, as if the clients ran elsewhere)")
	watchClientTo   = flag.String("watch-client-out", "", "internal: where a client process writes its report")
)

// watchReport is what one watcher client process measured.
type watchReport struct {
	Open      int     `json:"open"`      // watches that got their first line
	Failed    int     `json:"failed"`    // watches that could not be opened or ended early
	Events    int     `json:"events"`    // events received, all watches
	Latencies []int64 `json:"latencies"` // ms from the event's time to its receipt, all events
}

// eventTime returns the time of a feed event's line ({"result":{"event":
// {"eventId":…,"time":…}}}) and false for any other line (snapshot,
// heartbeat: an empty eventId). It looks for the two fields instead of decoding
// the line: the client processes share the machine's 2 cores with the
// replica, so their cost per line is part of the latency they measure.
func eventTime(line []byte) (time.Time, bool) {
	const id = `"eventId":"`
	if i := bytes.Index(line, []byte(id)); i < 0 || i+len(id) >= len(line) || line[i+len(id)] == '"' {
		return time.Time{}, false // no event id, or "" (a heartbeat)
	}
	const key = `"time":"`
	i := bytes.Index(line, []byte(key))
	if i < 0 {
		return time.Time{}, false
	}
	rest := line[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(rest[:j]))
	return t, err == nil
}

// churnDevices opens and closes rate device sessions per second on the
// replica until ctx ends (one ONLINE and one OFFLINE event each).
func churnDevices(ctx context.Context, grpcAddr string, rate float64) (int64, error) {
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	client := tetherv1.NewAgentServiceClient(conn)
	var n atomic.Int64
	var wg sync.WaitGroup
	t := time.NewTicker(time.Duration(float64(time.Second) / max(rate, 0.01)))
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			wg.Wait()
			return n.Load(), nil
		case <-t.C:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if benchSession(context.WithoutCancel(ctx), client, fmt.Sprintf("churn-%d", i)) == nil {
				n.Add(1)
			}
		}()
	}
}

func benchSession(ctx context.Context, client tetherv1.AgentServiceClient, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := client.Connect(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_Hello{Hello: &tetherv1.Hello{
		DeviceId: id, AgentVersion: "bench", Capabilities: []tetherv1.Capability{tetherv1.Capability_CAPABILITY_PONG},
		Info: &tetherv1.DeviceInfo{Hostname: id, BootId: "b"},
	}}}); err != nil {
		return err
	}
	if m, err := stream.Recv(); err != nil || m.GetHelloAck() == nil {
		return fmt.Errorf("hello: %v", err)
	}
	_ = stream.CloseSend()
	for {
		if _, err := stream.Recv(); err != nil {
			return nil
		}
	}
}

// timeGETs runs sequential GETs of one device until ctx ends.
func timeGETs(ctx context.Context, base, id string) []time.Duration {
	var out []time.Duration
	for ctx.Err() == nil {
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, base+"/v1/devices/"+id, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		cancel()
		if ctx.Err() != nil {
			break
		}
		out = append(out, time.Since(start))
		time.Sleep(20 * time.Millisecond)
	}
	return out
}

func pctDur(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p/100)]
}

func pctMS(ms []int64, p float64) time.Duration {
	if len(ms) == 0 {
		return 0
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	return time.Duration(s[int(float64(len(s)-1)*p/100)]) * time.Millisecond
}

// redisClients returns the connections Redis has open and how many of them
// are in XREAD, from CLIENT LIST.
func redisClients(addr string) (total, xread int) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return -1, -1
	}
	defer c.Close()
	fmt.Fprintf(c, "*2\r\n$6\r\nCLIENT\r\n$4\r\nLIST\r\n")
	r := bufio.NewReader(c)
	head, _ := r.ReadString('\n')
	size, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
	body := make([]byte, size)
	_, _ = io.ReadFull(r, body)
	for _, l := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		if strings.Contains(l, "cmd=client|list") {
			continue // this connection
		}
		total++
		if strings.Contains(l, "cmd=xread") {
			xread++
		}
	}
	return total, xread
}

// scrapeLabeled sums the samples of name whose label set contains label
// (e.g. `op="renew"`).
func scrapeLabeled(addr, name, label string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, name+"{") && strings.Contains(l, label) {
			f := strings.Fields(l)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

// watchers measures one replica (Redis store, in-process gateway) with
// thousands of HTTP watchers while devices churn, against the same churn
// without watchers.
func watchers() {
	n, k := *watchersN, max(*watchClients, 1)
	logf("scenario watchers: %d watchers in %d client processes, %g sessions/s churn", n, k, *watchChurn)
	defer stopAll()
	redisAddr, _ := startRedis()
	rs := startReplicas(1, redisAddr, "--max-watchers", strconv.Itoa(n+1000), "--max-watchers-per-key", strconv.Itoa(n+1000))
	r := rs[0]
	base := "http://" + r.http
	ctx := context.Background()
	conn, err := grpc.NewClient(r.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(err)
	must(benchSession(ctx, tetherv1.NewAgentServiceClient(conn), "probe"))
	conn.Close()

	phase := func() (gets []time.Duration, churned int64) {
		pctx, cancel := context.WithTimeout(ctx, *watchWindow)
		defer cancel()
		done := make(chan int64, 1)
		go func() { c, _ := churnDevices(pctx, r.grpc, *watchChurn); done <- c }()
		gets = timeGETs(pctx, base, "probe")
		return gets, <-done
	}
	logf("phase 1: churn without watchers")
	alone, _ := phase()

	logf("phase 2: opening %d watchers", n)
	wf := openWatchers("tether", base, r.metrics, n, k)
	opened := wf.opened
	reads0 := scrape(r.metrics, "tether_feed_reads_total")
	rssBefore := rssBytes(r.cmd.Process.Pid)
	cpu0 := cpuSeconds(r.cmd.Process.Pid)
	ccpu0 := wf.cpu()
	var conns, xreads, maxConns, maxX int
	sampling, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for sampling.Err() == nil {
			c, x := redisClients(redisAddr)
			maxConns, maxX = max(maxConns, c), max(maxX, x)
			conns, xreads = c, x
			time.Sleep(500 * time.Millisecond)
		}
	}()
	watched, churned := phase()
	stopSampling()
	<-sampled
	cpu := cpuSeconds(r.cmd.Process.Pid) - cpu0
	ccpu := wf.cpu() - ccpu0
	reads := scrape(r.metrics, "tether_feed_reads_total") - reads0
	rss := rssBytes(r.cmd.Process.Pid)
	all := wf.collect()
	renewMissed := scrapeLabeled(r.metrics, "tether_store_errors_total", `op="renew"`)
	slow := scrape(r.metrics, "tether_feed_slow_watchers_total")
	refused := scrape(r.metrics, "tether_watch_refused_total")
	poolWaits := scrapeLabeled(r.metrics, "tether_redis_pool_waits_total", `pool="lease"`)
	directs, joins := scrape(r.metrics, "tether_feed_direct_writes_total"), scrape(r.metrics, "tether_feed_joins_total")
	stopProc(r.cmd, 30*time.Second) // the floor below runs alone

	logf("phase 3: the watch floor, %d watchers", n)
	fl := watchFloorPhase(n, k, *watchChurn, *watchWindow, false)
	logf("phase 4: the raw watch floor, %d watchers", n)
	raw := watchFloorPhase(n, k, *watchChurn, *watchWindow, true)

	p50, p99 := pctMS(all.Latencies, 50), pctMS(all.Latencies, 99)
	g0, g1 := pctDur(alone, 99), pctDur(watched, 99)
	fmt.Printf("## Thousands of HTTP watchers on one replica (issue #13)\n\n")
	niceFlag := ""
	if *watchClientNice != 0 {
		niceFlag = fmt.Sprintf(" -watch-client-nice %d", *watchClientNice)
	}
	fmt.Printf("Command: `go run ./bench -scenarios watchers -watchers %d -watch-clients %d -watch-churn %g -watch-window %v%s` — one replica with the Redis store and the in-process JSON gateway (`--http`); %d watch client processes open `GET /v1/devices:watch` (one HTTP/1.1 connection each); the bench opens and closes %g device sessions per second (raw gRPC agent streams, an ONLINE and an OFFLINE event each) for %v while it times sequential `GET /v1/devices/probe` (one every 20 ms); the same churn and GETs ran first without any watcher. Delivery latency is the time from an event's `time` (set by the replica when the session opened or ended, before the registry write) to the line's arrival at the client; clocks are the same machine's.\n\n",
		n, k, *watchChurn, *watchWindow, niceFlag, k, *watchChurn, *watchWindow)
	fmt.Println("| | |")
	fmt.Println("|---|---|")
	fmt.Printf("| watchers open (replica's `tether_feed_watchers`) | %.0f of %d (%d failed to open or ended early) |\n", opened, n, all.Failed)
	fmt.Printf("| sessions churned while watched | %d (%d events per watcher expected) |\n", churned, 2*churned)
	fmt.Printf("| events delivered, all watchers | %d |\n", all.Events)
	fmt.Printf("| delivery latency p50 / p99 | %v / %v |\n", p50, p99)
	fmt.Printf("| GET p99 without watchers / with | %v / %v (%d / %d requests) |\n", g0.Round(100*time.Microsecond), g1.Round(100*time.Microsecond), len(alone), len(watched))
	fmt.Printf("| Redis connections of the replica (max sampled) | %d (in XREAD at once: max %d) |\n", maxConns, maxX)
	fmt.Printf("| event stream reads by the replica during the window | %.0f |\n", reads)
	fmt.Printf("| node renewals missed (`tether_store_errors_total{op=\"renew\"}`) | %.0f |\n", renewMissed)
	fmt.Printf("| lease pool waits (`tether_redis_pool_waits_total{pool=\"lease\"}`) | %.0f |\n", poolWaits)
	fmt.Printf("| watchers ended as slow / refused | %.0f / %.0f |\n", slow, refused)
	fmt.Printf("| replica CPU during the window | %.1f s of %v |\n", cpu, *watchWindow)
	fmt.Printf("| watch client processes' CPU during the window (all %d) | %.1f s |\n", k, ccpu)
	fmt.Printf("| replica RSS before the window / after | %.0f MiB / %.0f MiB |\n", float64(rssBefore)/(1<<20), float64(rss)/(1<<20))
	fmt.Println()
	_, _ = conns, xreads
	addTarget(fmt.Sprintf("watchers on one replica (%d run)", n), "10,000 with 1 Redis reader", fmt.Sprintf("%.0f open, max %d in XREAD", opened, maxX), opened >= 10000 && maxX <= 1)
	addTarget("event delivery p99", "≤ 250 ms", p99.String(), p99 <= 250*time.Millisecond)
	addTarget("GET p99 with watchers", "≤ 2× the run without", fmt.Sprintf("%v vs %v", g1.Round(100*time.Microsecond), g0.Round(100*time.Microsecond)), g1 <= 2*g0)
	addTarget("node renewals missed", "0", fmt.Sprintf("%.0f", renewMissed), renewMissed == 0)

	perDelivery := func(cpu float64, events int) string {
		if events == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f µs", cpu/float64(events)*1e6)
	}
	ratio := func(a, b float64) string {
		if b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f×", a/b)
	}
	fmt.Printf("### The same watchers against two watch floors (same run)\n\n")
	fmt.Printf("The naive floor (`bench/watchfloor.go`) is the watch stream written the obvious way with net/http and nothing else: a handler goroutine per watcher with a buffered channel, events stamped and handed to every channel under one lock, a preformatted line of the same shape and size as tether-server's; no registry, gRPC, authentication or encoding. The raw floor (`bench/watchfloor_raw_linux.go`) is what is left when the server does nothing but the writes: no net/http after the response headers, no goroutine per watcher, each event's chunk written to every socket with one write(2) from one loop per processor. The same %d client processes open %d watches on each, and each publishes two events every %v (the churn's rate) for %v, one after the other (tether-server's churn writes an ONLINE and, a moment later, an OFFLINE event).\n\n",
		k, n, time.Duration(float64(time.Second)/max(*watchChurn, 0.01)), *watchWindow)
	fmt.Println("| measure | raw floor | naive floor | tether-server | tether / naive floor |")
	fmt.Println("|---|---|---|---|---|")
	fmt.Printf("| watchers open | %.0f | %.0f | %.0f | |\n", raw.opened, fl.opened, opened)
	fmt.Printf("| events delivered, all watchers | %d (%d published) | %d (%d published) | %d | |\n", raw.rep.Events, raw.events, fl.rep.Events, fl.events, all.Events)
	fmt.Printf("| delivery latency p50 | %v | %v | %v | %s |\n", raw.p50, fl.p50, p50, ratio(float64(p50), float64(fl.p50)))
	fmt.Printf("| delivery latency p99 | %v | %v | %v | %s |\n", raw.p99, fl.p99, p99, ratio(float64(p99), float64(fl.p99)))
	fmt.Printf("| server CPU per delivery (CPU in the window / events delivered) | %s | %s | %s | %s |\n", perDelivery(raw.cpu, raw.rep.Events), perDelivery(fl.cpu, fl.rep.Events), perDelivery(cpu, all.Events),
		ratio(cpu/float64(max(all.Events, 1)), fl.cpu/float64(max(fl.rep.Events, 1))))
	fmt.Printf("| client processes' CPU per delivery | %s | %s | %s | |\n", perDelivery(raw.clientCPU, raw.rep.Events), perDelivery(fl.clientCPU, fl.rep.Events), perDelivery(ccpu, all.Events))
	fmt.Printf("| direct writes / joined fan-outs (replica's `tether_feed_direct_writes_total`, `tether_feed_joins_total`) | | | %.0f / %.0f | |\n", directs, joins)
	fmt.Println()
	addTarget("event delivery p99 / watch floors' (same run)", "(no target: context)", fmt.Sprintf("%v vs naive %v (%s), raw %v", p99, fl.p99, ratio(float64(p99), float64(fl.p99)), raw.p99), true)
}

// watcherFleet is the watch client processes of one measured server.
type watcherFleet struct {
	clients []*exec.Cmd
	outs    []string
	opened  float64 // watchers the server counted once they were open
}

// openWatchers starts k client processes with n watches in all on base and
// waits (at most 5 minutes) until the server's tether_feed_watchers on
// metrics counts them.
func openWatchers(tag, base, metrics string, n, k int) *watcherFleet {
	self, err := os.Executable()
	must(err)
	wf := &watcherFleet{}
	for i := range k {
		m := n / k
		if i < n%k {
			m++
		}
		out := filepath.Join(*logDir, fmt.Sprintf("watch-client-%s-%d.json", tag, i))
		wf.outs = append(wf.outs, out)
		args := []string{self, "-watch-client", base, "-watch-client-n", strconv.Itoa(m), "-watch-client-out", out}
		if *watchClientNice != 0 {
			args = append([]string{"-n", strconv.Itoa(*watchClientNice)}, args...)
			wf.clients = append(wf.clients, start("nice", args...))
		} else {
			wf.clients = append(wf.clients, start(args[0], args[1:]...))
		}
	}
	openStart := time.Now()
	for time.Since(openStart) < 5*time.Minute && scrape(metrics, "tether_feed_watchers") < float64(n) {
		time.Sleep(time.Second)
	}
	wf.opened = scrape(metrics, "tether_feed_watchers")
	logf("%s: %v watchers open after %v", tag, wf.opened, time.Since(openStart).Round(time.Second))
	return wf
}

// cpu is the CPU seconds the client processes used so far.
func (wf *watcherFleet) cpu() (sum float64) {
	for _, c := range wf.clients {
		sum += cpuSeconds(c.Process.Pid)
	}
	return sum
}

// collect lets the last events arrive, stops the clients and sums their
// reports.
func (wf *watcherFleet) collect() watchReport {
	time.Sleep(3 * time.Second)
	for _, c := range wf.clients {
		stopProc(c, 60*time.Second)
	}
	var all watchReport
	for _, o := range wf.outs {
		b, err := os.ReadFile(o)
		must(err)
		var rep watchReport
		must(json.Unmarshal(b, &rep))
		all.Open += rep.Open
		all.Failed += rep.Failed
		all.Events += rep.Events
		all.Latencies = append(all.Latencies, rep.Latencies...)
	}
	return all
}
