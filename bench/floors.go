package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

	floorsVariants = flag.String("floors-variants", "", "more tether-server binaries to measure in the same run, as label=path,label=path (experiments: each gets a row in the variants table)")

	floorMetrics = flag.String("floor-metrics", "", "internal: the floor server's metrics address")
	floorPing    = flag.Duration("floor-ping", 0, "internal: the floor server's Ping interval (0: no Pings)")
)

// floorRun is what one server did in the floors scenario.
type floorRun struct {
	name                  string
	held                  int
	registered, visible   time.Duration
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
	floorRes := floorsMeasure("floor", n, func() (string, string, string, *exec.Cmd) {
		addr, maddr := freePort(), freePort()
		p := start(self, "-floor", addr, "-floor-metrics", maddr, "-floor-ping", "10s")
		return addr, maddr, "floor_sessions", p
	}, "floor_pongs_total", "")
	var extra []string
	if *floorsServer != "" {
		extra = strings.Fields(*floorsServer)
	}
	tether := func(label, bin string) floorRun {
		return floorsMeasure(label, n, func() (string, string, string, *exec.Cmd) {
			rs := startReplicasBin(bin, 1, "", extra...)
			return rs[0].grpc, rs[0].metrics, "tether_sessions", rs[0].cmd
		}, "tether_ping_rtt_seconds_count", "http")
	}
	ours := tether("tether", "tether-server")
	var variants []floorRun
	for _, v := range strings.Split(*floorsVariants, ",") {
		label, bin, ok := strings.Cut(v, "=")
		if !ok {
			continue
		}
		variants = append(variants, tether(label, bin))
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
	fmt.Printf("| connect storm: all registered | %.0f /s (%.1f s)%s | %.0f /s (%.1f s)%s | %.2f× | |\n", fReg, f.registered.Seconds(), la(f, "storm"), tReg, t.registered.Seconds(), la(t, "storm"), ratio(tReg, fReg))
	tVis := rate(t, t.visible)
	storm := ratio(tVis, fReg)
	fmt.Printf("| connect storm: registered and visible (floor: no registry, so registered) | %.0f /s%s | %.0f /s (%.1f s)%s | %.2f× | ≥ 0.8× |\n", fReg, la(f, "storm"), tVis, t.visible.Seconds(), la(t, "storm"), storm)
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
		fmt.Println("| build | RSS per session | heap / stacks per session | CPU per cycle | storm, registered and visible | command p99 idle | saturated ok/s | load (1/5/15) at the RSS figure |")
		fmt.Println("|---|---|---|---|---|---|---|---|")
		for _, v := range append([]floorRun{t}, variants...) {
			vis := rate(v, v.visible)
			fmt.Printf("| %s | %.1f KB (%.2f×) | %.1f / %.1f KB | %.0f µs (%.2f×) | %.0f /s (%.2f×) | %.2f ms (%.2f×) | %.0f (%.2f×) | %s |\n", v.name,
				v.rssPer, ratio(v.rssPer, f.rssPer), v.heapPer, v.stackPer, v.cpuPerCycle, ratio(v.cpuPerCycle, f.cpuPerCycle), vis, ratio(vis, fReg),
				v.idleP99, ratio(v.idleP99, f.idleP99), v.satOK, ratio(v.satOK, f.satOK), v.load["rss"])
		}
		fmt.Println()
	}
	addTarget("RSS per session / pinging floor", "≤ 1.15×", fmt.Sprintf("%.2f×", rss), rss > 0 && rss <= 1.15)
	addTarget("CPU per Ping/Pong cycle / pinging floor", "≤ 1.2×", fmt.Sprintf("%.2f×", cpu), cpu > 0 && cpu <= 1.2)
	addTarget("connect storm (registered and visible) / connect floor", "≥ 0.8×", fmt.Sprintf("%.2f×", storm), storm >= 0.8)
	addTarget("command p99 idle / command floor", "≤ 2×", fmt.Sprintf("%.2f×", idle), idle > 0 && idle <= 2)
	addTarget("command throughput at saturation / command floor", "≥ 0.7×", fmt.Sprintf("%.2f×", sat), sat >= 0.7)
}

// floorsMeasure runs the floors load against one server: the connect
// storm, the steady state, then the two command phases.
func floorsMeasure(name string, n int, startServer func() (addr, metrics, sessionsMetric string, p *exec.Cmd), pongsMetric, apiKind string) floorRun {
	defer stopAll()
	r := floorRun{name: name, load: map[string]string{}}
	addr, maddr, sessMetric, p := startServer()
	waitListening(addr)
	waitListening(maddr)
	time.Sleep(300 * time.Millisecond)
	base := rssBytes(p.Process.Pid)
	heap0, stack0 := scrape(maddr, "go_memstats_heap_inuse_bytes"), scrape(maddr, "go_memstats_stack_inuse_bytes")
	logf("floors/%s: connect storm of %d sessions", name, n)
	begin := time.Now()
	lgs, _ := loadgens(n, []string{addr}, "floors-"+name)
	deadline := begin.Add(3 * time.Minute)
	for int(scrape(maddr, sessMetric)) < n && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	r.registered = time.Since(begin)
	r.load["storm"] = loadavg()
	if apiKind == "http" {
		// tether-server: visible as online through the JSON API. The http
		// address is the replica's; find it from the process arguments.
		httpAddr := argAfter(p, "--http")
		for time.Now().Before(deadline) {
			if c, err := countOnline(httpAddr); err == nil && c >= n {
				r.visible = time.Since(begin)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	logf("floors/%s: registered in %v (visible %v); settling", name, r.registered, r.visible)
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
	for _, c := range lgs {
		stopProc(c, 30*time.Second)
	}
	return r
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
