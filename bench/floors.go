package main

import (
	"bufio"
	"bytes"
	"cmp"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

var (
	floorsN      = flag.Int("floors-devices", 10000, "sessions held in the floors scenario")
	floorsWindow = flag.Duration("floors-window", 30*time.Second, "steady-state window of the floors scenario (RSS and CPU per Ping/Pong cycle)")
	floorsCmd    = flag.Duration("floors-commands", 15*time.Second, "length of each command phase of the floors scenario (the first 5 s are warm-up)")
	floorsSat    = flag.Int("floors-saturate", 20000, "command rate asked in the saturated phase of the floors scenario (well above what 2 cores achieve)")
	floorsServer = flag.String("floors-server-args", "", "extra tether-server flags for the floors scenario (space-separated), to compare a change in one run")

	floorsStorms   = flag.Int("floors-storms", 3, "connect storms per server in the floors scenario, each on a fresh server, floor and tether-server alternating; the storm rates are their medians")
	floorsVariants = flag.String("floors-variants", "", "more tether-server builds or settings to measure in the same run, as label=path[ flag …],… (experiments: each gets a row in the variants table)")

	floorMetrics = flag.String("floor-metrics", "", "internal: the floor server's metrics address")
	floorPing    = flag.Duration("floor-ping", 0, "internal: the floor server's Ping interval (0: no Pings)")
)

// floorRun is what one server did in the floors scenario.
type floorRun struct {
	name                  string
	held                  int
	registered, visible   time.Duration // medians over the storm rounds (variants: the one storm that filled the server)
	storms                []storm
	rssPer                float64 // KB per session
	heapPer, stackPer     float64 // KB per session: Go heap in use, goroutine stacks
	cpuPerCycle           float64 // µs of server CPU per Ping/Pong cycle
	cycles                float64
	idleP50, idleP99      float64 // ms
	idleOK                float64
	satOK, satP50, satP99 float64
	satErrs               int64
	load                  map[string]string // measure -> load average when it was taken
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// floors runs the same load against the naive floor server and against
// tether-server, one after the other in the same run, and reports the
// ratios of each cost.
func floors() {
	n := *floorsN
	logf("scenario floors: %d sessions, 10 s pings, on the naive grpc-go floor and on tether-server", n)
	self, err := os.Executable()
	must(err)
	floorServer := func() (string, string, string, *exec.Cmd) {
		addr, maddr := freePort(), freePort()
		p := start(self, "-floor", addr, "-floor-metrics", maddr, "-floor-ping", "10s")
		return addr, maddr, "floor_sessions", p
	}
	var extra []string
	if *floorsServer != "" {
		extra = strings.Fields(*floorsServer)
	}
	tetherServer := func(bin string, args ...string) func() (string, string, string, *exec.Cmd) {
		return func() (string, string, string, *exec.Cmd) {
			rs := startReplicasBin(bin, 1, "", append(slices.Clone(extra), args...)...)
			return rs[0].grpc, rs[0].metrics, "tether_sessions", rs[0].cmd
		}
	}
	tether := func(label, bin string, args ...string) floorRun {
		return floorsMeasure(label, n, tetherServer(bin, args...), "tether_ping_rtt_seconds_count", "http")
	}
	floorRes := floorsMeasure("floor", n, floorServer, "floor_pongs_total", "")
	ours := tether("tether", "tether-server")
	// The storm rounds: fresh servers, alternating, so that a change in
	// the shared machine's load between two storms hits both servers.
	for i := 1; i <= *floorsStorms; i++ {
		floorRes.storms = append(floorRes.storms, stormRound(fmt.Sprintf("floor-storm%d", i), n, floorServer, ""))
		ours.storms = append(ours.storms, stormRound(fmt.Sprintf("tether-storm%d", i), n, tetherServer("tether-server"), "http"))
	}
	floorRes.settleStorms()
	ours.settleStorms()
	var variants []floorRun
	for _, v := range strings.Split(*floorsVariants, ",") {
		label, spec, ok := strings.Cut(v, "=")
		if f := strings.Fields(spec); ok && len(f) > 0 {
			variants = append(variants, tether(label, f[0], f[1:]...))
		}
	}

	fmt.Println("## Floors: tether-server against naive grpc-go servers doing the same work")
	fmt.Println()
	fmt.Printf("Command: `go run ./bench -scenarios floors` (%d sessions from one loadgen process at ramp %d/s, 10 s pings, steady window %v, command phases of %v with 5 s warm-up; tether-server flags: `%s`). "+
		"The floor (`bench/floor.go`) is the same work written the obvious way on grpc-go with nothing else: Hello→HelloAck with no registry (connect floor), "+
		"a second goroutine per stream sending a Ping per interval while the handler reads the Pongs (pinging floor), and a SendCommand that looks the device up in a map, sends the Command on its stream and waits for the result (command floor); "+
		"same 8 KiB transport buffers as tether-server's baseline. tether-server runs with the embedded store; both are measured in the same run, one after the other, with the same load generator. "+
		"Load average (1/5/15 min) is given next to each figure: the 2 cores are shared.\n\n",
		n, *ramp, floorsWindow.Round(time.Second), floorsCmd.Round(time.Second), strings.Join(append([]string{"--log-level warn"}, extra...), " "))
	fmt.Println("| measure | naive floor | tether-server | ratio tether / floor | target |")
	fmt.Println("|---|---|---|---|---|")
	f, t := floorRes, ours
	la := func(r floorRun, k string) string { return " (load " + r.load[k] + ")" }
	ratio := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	rss := ratio(t.rssPer, f.rssPer)
	fmt.Printf("| RSS per held session (RSS growth / sessions) | %.1f KB%s | %.1f KB%s | %.2f× | ≤ 1.15× |\n", f.rssPer, la(f, "rss"), t.rssPer, la(t, "rss"), rss)
	fmt.Printf("| of which Go heap in use / goroutine stacks, per session (growth of go_memstats_heap_inuse_bytes / stack_inuse_bytes) | %.1f KB / %.1f KB | %.1f KB / %.1f KB | %.2f× / %.2f× | |\n",
		f.heapPer, f.stackPer, t.heapPer, t.stackPer, ratio(t.heapPer, f.heapPer), ratio(t.stackPer, f.stackPer))
	cpu := ratio(t.cpuPerCycle, f.cpuPerCycle)
	fmt.Printf("| server CPU per Ping/Pong cycle (CPU in the window / Pongs read) | %.0f µs (%.0f cycles)%s | %.0f µs (%.0f cycles)%s | %.2f× | ≤ 1.2× |\n", f.cpuPerCycle, f.cycles, la(f, "cpu"), t.cpuPerCycle, t.cycles, la(t, "cpu"), cpu)
	rate := func(r floorRun, d time.Duration) float64 {
		if d <= 0 {
			return 0
		}
		return float64(r.held) / d.Seconds()
	}
	fReg, tReg := rate(f, f.registered), rate(t, t.registered)
	rounds := func(r floorRun, visible bool) string {
		var parts []string
		for _, st := range r.storms {
			d := st.registered
			if visible {
				d = st.visible
			}
			parts = append(parts, fmt.Sprintf("%.1f s", d.Seconds()))
		}
		return strings.Join(parts, ", ")
	}
	fmt.Printf("| connect storm: all registered (median of %d storms: %s / %s) | %.0f /s (%.1f s)%s | %.0f /s (%.1f s)%s | %.2f× | |\n",
		len(t.storms), rounds(f, false), rounds(t, false), fReg, f.registered.Seconds(), la(f, "storm"), tReg, t.registered.Seconds(), la(t, "storm"), ratio(tReg, fReg))
	tVis := rate(t, t.visible)
	stormRatio := ratio(tVis, fReg)
	fmt.Printf("| connect storm: registered and visible — an ONLINE event for every device on a watch opened before the storm (floor: no registry, so registered; tether storms: %s) | %.0f /s%s | %.0f /s (%.1f s)%s | %.2f× | ≥ 0.8× |\n",
		rounds(t, true), fReg, la(f, "storm"), tVis, t.visible.Seconds(), la(t, "storm"), stormRatio)
	stormCPU := func(r floorRun) float64 { return stormMedian(r.storms, func(s storm) float64 { return s.cpuPer }) }
	fmt.Printf("| server CPU per session during the storm (median; includes the first Pings) | %.0f µs | %.0f µs | %.2f× | |\n", stormCPU(f), stormCPU(t), ratio(stormCPU(t), stormCPU(f)))
	fmt.Printf("| command round trip, idle (100/s): p50 | %.2f ms%s | %.2f ms%s | %.2f× | |\n", f.idleP50, la(f, "idle"), t.idleP50, la(t, "idle"), ratio(t.idleP50, f.idleP50))
	idle := ratio(t.idleP99, f.idleP99)
	fmt.Printf("| command round trip, idle (100/s): p99 | %.2f ms | %.2f ms | %.2f× | ≤ 2× |\n", f.idleP99, t.idleP99, idle)
	sat := ratio(t.satOK, f.satOK)
	fmt.Printf("| commands at saturation (asked %d/s, 256 in flight): achieved ok/s | %.0f /s (p50 %.1f ms, p99 %.1f ms, %d errors)%s | %.0f /s (p50 %.1f ms, p99 %.1f ms, %d errors)%s | %.2f× | ≥ 0.7× |\n",
		*floorsSat, f.satOK, f.satP50, f.satP99, f.satErrs, la(f, "sat"), t.satOK, t.satP50, t.satP99, t.satErrs, la(t, "sat"), sat)
	fmt.Printf("| sessions held | %d | %d | | |\n", f.held, t.held)
	fmt.Println()
	if len(variants) > 0 {
		fmt.Printf("Other tether-server builds measured in the same run (`-floors-variants %s`), as ratios to the same floor:\n\n", *floorsVariants)
		fmt.Println("| build | RSS per session | heap / stacks per session | CPU per cycle | storm, registered (tether: median of the rounds; others: the one storm that filled it) | command p99 idle | saturated ok/s | load (1/5/15) at the RSS figure |")
		fmt.Println("|---|---|---|---|---|---|---|---|")
		for _, v := range append([]floorRun{t}, variants...) {
			vis := rate(v, v.registered)
			fmt.Printf("| %s | %.1f KB (%.2f×) | %.1f / %.1f KB | %.0f µs (%.2f×) | %.0f /s (%.2f×) | %.2f ms (%.2f×) | %.0f (%.2f×) | %s |\n", v.name,
				v.rssPer, ratio(v.rssPer, f.rssPer), v.heapPer, v.stackPer, v.cpuPerCycle, ratio(v.cpuPerCycle, f.cpuPerCycle), vis, ratio(vis, fReg),
				v.idleP99, ratio(v.idleP99, f.idleP99), v.satOK, ratio(v.satOK, f.satOK), v.load["rss"])
		}
		fmt.Println()
	}
	addTarget("RSS per session / pinging floor", "≤ 1.15×", fmt.Sprintf("%.2f×", rss), rss > 0 && rss <= 1.15)
	addTarget("CPU per Ping/Pong cycle / pinging floor", "≤ 1.2×", fmt.Sprintf("%.2f×", cpu), cpu > 0 && cpu <= 1.2)
	addTarget("connect storm (registered and visible) / connect floor", "≥ 0.8×", fmt.Sprintf("%.2f×", stormRatio), stormRatio >= 0.8)
	addTarget("command p99 idle / command floor", "≤ 2×", fmt.Sprintf("%.2f×", idle), idle > 0 && idle <= 2)
	addTarget("command throughput at saturation / command floor", "≥ 0.7×", fmt.Sprintf("%.2f×", sat), sat >= 0.7)
}

// floorsMeasure runs the floors load against one server: the connect
// storm, the steady state, then the two command phases.
func floorsMeasure(name string, n int, startServer func() (addr, metrics, sessionsMetric string, p *exec.Cmd), pongsMetric, apiKind string) floorRun {
	defer stopAll()
	r := floorRun{name: name, load: map[string]string{}}
	addr, maddr, sessMetric, p := startListening(startServer)
	base := rssBytes(p.Process.Pid)
	heap0, stack0 := scrape(maddr, "go_memstats_heap_inuse_bytes"), scrape(maddr, "go_memstats_stack_inuse_bytes")
	// This storm only fills the server: the storm figures come from the
	// storm rounds (stormRound), so that no operator's watch or listing
	// adds to this server's memory.
	st := stormOn(name, n, addr, maddr, sessMetric, p, "")
	r.registered = st.registered
	r.load["storm"] = st.load
	logf("floors/%s: settling", name)
	time.Sleep(15 * time.Second)
	cpu0, pongs0 := cpuSeconds(p.Process.Pid), scrape(maddr, pongsMetric)
	time.Sleep(*floorsWindow)
	cpu1, pongs1 := cpuSeconds(p.Process.Pid), scrape(maddr, pongsMetric)
	r.load["cpu"] = loadavg()
	r.cycles = pongs1 - pongs0
	if r.cycles > 0 {
		r.cpuPerCycle = (cpu1 - cpu0) / r.cycles * 1e6
	}
	r.held = int(scrape(maddr, sessMetric))
	r.rssPer = float64(rssBytes(p.Process.Pid)-base) / float64(max(r.held, 1)) / 1000
	r.heapPer = (scrape(maddr, "go_memstats_heap_inuse_bytes") - heap0) / float64(max(r.held, 1)) / 1000
	r.stackPer = (scrape(maddr, "go_memstats_stack_inuse_bytes") - stack0) / float64(max(r.held, 1)) / 1000
	r.load["rss"] = r.load["cpu"]
	logf("floors/%s: %d held, %.1f KB/session, %.0f µs/cycle over %.0f cycles", name, r.held, r.rssPer, r.cpuPerCycle, r.cycles)

	phase := func(key string, args ...string) (ok, p50, p99 float64, errs int64) {
		out := filepath.Join(*logDir, fmt.Sprintf("floors-%s-%s.json", name, key))
		a := append([]string{"--server", addr, "--devices", "100", "--id-prefix", "fcmd-" + key + "-", "--json", "--duration", floorsCmd.String(),
			"--report-every", "0", "--warmup", "5s", "--commands-via", addr}, args...)
		cmd := exec.Command(filepath.Join(*binDir, "tether-loadgen"), a...)
		f, err := os.Create(out)
		must(err)
		lf, _ := os.Create(out + ".log")
		cmd.Stdout, cmd.Stderr = f, lf
		must(cmd.Run())
		r.load[key] = loadavg()
		rep := readReport(out)
		if rep == nil || rep.Commands == nil {
			logf("floors/%s: command report %s missing", name, out)
			return
		}
		c := rep.Commands
		for _, v := range c.ErrorsByCode {
			errs += v
		}
		return float64(c.OK) / c.WindowSeconds, c.LatencyMS.P50, c.LatencyMS.P99, errs
	}
	r.idleOK, r.idleP50, r.idleP99, _ = phase("idle", "--commands-rate", "100/s")
	r.satOK, r.satP50, r.satP99, r.satErrs = phase("sat", "--commands-rate", strconv.Itoa(*floorsSat)+"/s", "--commands-concurrency", "256")
	logf("floors/%s: commands idle p50 %.2f p99 %.2f ms; saturated %.0f ok/s", name, r.idleP50, r.idleP99, r.satOK)
	for _, c := range st.loadgens {
		stopProc(c, 30*time.Second)
	}
	return r
}

// storm is one connect storm of n sessions against a fresh server.
type storm struct {
	registered time.Duration // until the server counted n sessions
	visible    time.Duration // until an operator's watch had seen n ONLINE events (tether-server; 0 for the floor)
	cpuPer     float64       // µs of server CPU per session during the storm
	load       string
	loadgens   []*exec.Cmd
}

// stormOn storms the running server p with n sessions from one load
// generator process. For tether-server (apiKind "http") an operator's watch
// (GET /v1/devices:watch on the replica's --http address, the fleet page's
// feed) is open before the first dial, and the storm is visible when it has
// delivered an ONLINE event for each of the n devices.
func stormOn(name string, n int, addr, maddr, sessMetric string, p *exec.Cmd, apiKind string) storm {
	logf("floors/%s: connect storm of %d sessions", name, n)
	prefix := "floors-" + name
	var seen *onlineWatch
	if apiKind == "http" {
		var err error
		if seen, err = watchOnline(argAfter(p, "--http"), prefix+"-", n); err != nil {
			logf("floors/%s: cannot open the watch: %v", name, err)
		} else {
			defer seen.close()
		}
	}
	var st storm
	cpu0 := cpuSeconds(p.Process.Pid)
	begin := time.Now()
	st.loadgens, _ = loadgens(n, []string{addr}, prefix)
	deadline := begin.Add(3 * time.Minute)
	for int(scrape(maddr, sessMetric)) < n && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	st.registered = time.Since(begin)
	st.cpuPer = (cpuSeconds(p.Process.Pid) - cpu0) / float64(n) * 1e6
	st.load = loadavg()
	if seen != nil {
		select {
		case at := <-seen.all:
			st.visible = at.Sub(begin)
		case <-time.After(time.Until(deadline)):
		}
		if c, err := countOnline(argAfter(p, "--http")); err != nil || c < n {
			logf("floors/%s: the listing shows %d of %d online (%v)", name, c, n, err)
		}
	}
	logf("floors/%s: registered in %v (visible %v), %.0f µs of server CPU per session", name, st.registered, st.visible, st.cpuPer)
	return st
}

// stormRound starts a fresh server, storms it and stops everything.
func stormRound(name string, n int, startServer func() (addr, metrics, sessionsMetric string, p *exec.Cmd), apiKind string) storm {
	defer stopAll()
	addr, maddr, sessMetric, p := startListening(startServer)
	return stormOn(name, n, addr, maddr, sessMetric, p, apiKind)
}

// startListening starts a server and returns once its gRPC and metrics
// addresses accept connections.
func startListening(startServer func() (addr, metrics, sessionsMetric string, p *exec.Cmd)) (addr, metrics, sessionsMetric string, p *exec.Cmd) {
	addr, metrics, sessionsMetric, p = startServer()
	waitListening(addr)
	waitListening(metrics)
	time.Sleep(300 * time.Millisecond)
	return addr, metrics, sessionsMetric, p
}

// settleStorms sets the storm durations to the medians of r.storms.
func (r *floorRun) settleStorms() {
	if len(r.storms) == 0 {
		return
	}
	r.registered = stormMedian(r.storms, func(s storm) time.Duration { return s.registered })
	r.visible = stormMedian(r.storms, func(s storm) time.Duration { return s.visible })
	for _, s := range r.storms {
		if s.registered == r.registered {
			r.load["storm"] = s.load // the load average at the median storm
		}
	}
}

// stormMedian is the median (the upper one of an even count) of one figure
// of storms; zero without storms.
func stormMedian[T cmp.Ordered](storms []storm, get func(storm) T) T {
	var xs []T
	for _, s := range storms {
		xs = append(xs, get(s))
	}
	if len(xs) == 0 {
		var zero T
		return zero
	}
	slices.Sort(xs)
	return xs[len(xs)/2]
}

// onlineWatch counts the distinct devices (ids with a prefix) a watch has
// seen come ONLINE.
type onlineWatch struct {
	all  chan time.Time // receives the arrival time of the n-th device
	body io.Closer
}

func (w *onlineWatch) close() { _ = w.body.Close() }

// watchOnline opens GET /v1/devices:watch on httpAddr and returns once its
// first line (a heartbeat) has arrived.
func watchOnline(httpAddr, prefix string, n int) (*onlineWatch, error) {
	resp, err := http.Get("http://" + httpAddr + "/v1/devices:watch")
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("watch: %s", resp.Status)
	}
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	if _, err := r.ReadSlice('\n'); err != nil {
		resp.Body.Close()
		return nil, err
	}
	w := &onlineWatch{all: make(chan time.Time, 1), body: resp.Body}
	go func() {
		seen := make(map[string]struct{}, n)
		for {
			line, err := r.ReadSlice('\n')
			if err != nil {
				return
			}
			if !bytes.Contains(line, []byte(`"EVENT_TYPE_ONLINE"`)) {
				continue
			}
			const key = `"deviceId":"`
			i := bytes.Index(line, []byte(key))
			if i < 0 {
				continue
			}
			id, _, _ := bytes.Cut(line[i+len(key):], []byte(`"`))
			if !bytes.HasPrefix(id, []byte(prefix)) {
				continue
			}
			if _, ok := seen[string(id)]; !ok {
				seen[string(id)] = struct{}{}
				if len(seen) == n {
					w.all <- time.Now()
				}
			}
		}
	}()
	return w, nil
}

// argAfter returns the value following flag in p's arguments.
func argAfter(p *exec.Cmd, flag string) string {
	for i, a := range p.Args {
		if a == flag && i+1 < len(p.Args) {
			return p.Args[i+1]
		}
	}
	return ""
}
