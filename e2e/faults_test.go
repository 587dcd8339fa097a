package e2e

// The fault suite (TestFault*): every scenario injects one failure into real
// binaries (tether-server replicas, tether-loadgen, tether-agent) sharing a
// real redis-server, then asserts that the registry is exactly right: the
// number of online devices through the JSON API (paged), each device's node,
// lease and last disconnect, and no stale online record (the replicas'
// tether_sessions gauges add up to the online count).
//
// Sizes and liveness settings are reduced by default, so that a plain
// `go test ./e2e/` (CI) runs the whole suite in a few minutes; with
// TETHER_FAULTS=full the scenarios run at full size with the production
// liveness defaults (make faults). With TETHER_FAULTS_REPORT=<file> each
// scenario appends one Markdown table row with what it measured
// (docs/RELIABILITY.md is generated from those rows).

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/loadgen"
)

// faultsFull reports whether the suite runs at full size (TETHER_FAULTS=full).
func faultsFull() bool { return os.Getenv("TETHER_FAULTS") == "full" }

// bySize returns full or reduced, by mode.
func bySize[T any](full, reduced T) T {
	if faultsFull() {
		return full
	}
	return reduced
}

// liveness is a replica's liveness configuration.
type liveness struct {
	interval, timeout, leaseTTL time.Duration
}

// faultLiveness is the production defaults in full mode and short settings
// in reduced mode (the bounds scale with them).
func faultLiveness() liveness {
	if faultsFull() {
		return liveness{10 * time.Second, 5 * time.Second, 15 * time.Second}
	}
	return liveness{2 * time.Second, 1 * time.Second, 3 * time.Second}
}

// bound is the documented detection bound: ping-interval + ping-timeout.
func (l liveness) bound() time.Duration { return l.interval + l.timeout }

// grace is what a detection may exceed the bound by on a busy machine (timer
// and scheduling delay; the registry write is not included, detection times
// are the server's own end-of-session timestamps).
func (l liveness) grace() time.Duration { return 500*time.Millisecond + l.bound()/10 }

func (l liveness) args() []string {
	return []string{"--ping-interval", l.interval.String(), "--ping-timeout", l.timeout.String(), "--lease-ttl", l.leaseTTL.String()}
}

func (l liveness) String() string {
	return fmt.Sprintf("ping %v+%v, lease TTL %v", l.interval, l.timeout, l.leaseTTL)
}

// launchProc runs path with args like start does, with three differences: the
// path is given (so `ip netns exec …` works), stdout may be kept apart, and
// a failed test logs only the tail of the output (a server with thousands of
// sessions logs a lot). A stopped (SIGSTOP) process is continued before it
// is stopped.
func launchProc(t *testing.T, name string, stdout io.Writer, path string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), "TETHER_LOG_LEVEL=info")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.signal(syscall.SIGCONT)
		_ = p.stop(5 * time.Second)
		if t.Failed() {
			t.Logf("--- %s (%s %s), last lines of output:\n%s", name, filepath.Base(path), strings.Join(args, " "), lastLines(out.String(), 40))
		}
	})
	return p
}

// running reports whether the process has not exited.
func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("… (%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// freplica is one tether-server replica with the JSON API and metrics.
type freplica struct {
	node, grpc, http, metrics string
	p                         *proc
}

// startReplica starts a tether-server on Redis; listen may be "" for a free
// loopback port.
func startReplica(t *testing.T, node, redisURL, listen string, lv liveness, extra ...string) *freplica {
	t.Helper()
	if listen == "" {
		listen = freeAddr(t)
	}
	r := &freplica{node: node, grpc: listen, http: freeAddr(t), metrics: freeAddr(t)}
	args := []string{"--listen", r.grpc, "--http", r.http, "--metrics", r.metrics, "--node", node, "--redis", redisURL}
	args = append(append(args, lv.args()...), extra...)
	r.p = launchProc(t, "tether-server "+node, nil, filepath.Join(binDir, "tether-server"), args...)
	waitListening(t, r.grpc)
	waitListening(t, r.http)
	waitListening(t, r.metrics)
	return r
}

func (r *freplica) base() string { return "http://" + r.http }

// metric reads one sample sum from the replica's /metrics.
func (r *freplica) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	s, err := scrapeMetrics("http://" + r.metrics + "/metrics")
	if err != nil {
		t.Fatalf("replica %s: %v", r.node, err)
	}
	return s.value(name, labels...)
}

// sessions is the replica's tether_sessions gauge (all modes).
func (r *freplica) sessions(t *testing.T) int {
	t.Helper()
	return int(r.metric(t, "tether_sessions"))
}

// The load generator is not built by TestMain; the first test that needs it
// builds it into binDir.
var (
	loadgenOnce sync.Once
	loadgenErr  error
)

func loadgenPath(t *testing.T) string {
	t.Helper()
	p := filepath.Join(binDir, "tether-loadgen")
	loadgenOnce.Do(func() {
		out, err := exec.Command("go", "build", "-o", p, "../cmd/tether-loadgen").CombinedOutput()
		if err != nil {
			loadgenErr = fmt.Errorf("building tether-loadgen: %v\n%s", err, out)
		}
	})
	if loadgenErr != nil {
		t.Fatal(loadgenErr)
	}
	return p
}

// loadgenProc is a running tether-loadgen; its JSON report arrives on stdout
// when it ends.
type loadgenProc struct {
	*proc
	stdout *syncBuffer
}

// startLoadgen runs tether-loadgen --json with args (progress lines every
// 2 s on stderr, kept for failure reports).
func startLoadgen(t *testing.T, name string, args ...string) *loadgenProc {
	t.Helper()
	stdout := &syncBuffer{}
	args = append([]string{"--json", "--report-every", "2s"}, args...)
	return &loadgenProc{proc: launchProc(t, name, stdout, loadgenPath(t), args...), stdout: stdout}
}

// finish continues, interrupts and waits for the load generator, and returns
// its final report (taken before it closed its sessions).
func (l *loadgenProc) finish(t *testing.T) *loadgen.Report {
	t.Helper()
	l.signal(syscall.SIGCONT)
	l.signal(syscall.SIGTERM)
	if err := l.wait(t, 30*time.Second); err != nil {
		t.Fatalf("%s exited with %v:\n%s", l.name, err, lastLines(l.out.String(), 20))
	}
	var rep loadgen.Report
	if err := json.Unmarshal([]byte(l.stdout.String()), &rep); err != nil {
		t.Fatalf("%s report: %v\n%s", l.name, err, l.stdout.String())
	}
	return &rep
}

func sumCounts(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// lease is the current session's lease (0 when none).
func (d device) lease() uint64 {
	if d.Session == nil {
		return 0
	}
	n, _ := strconv.ParseUint(d.Session.LeaseID, 10, 64)
	return n
}

func (d device) node() string {
	if d.Session == nil {
		return ""
	}
	return d.Session.Node
}

// lastLease is the lease of the last session that ended (0 when none).
func (d device) lastLease() uint64 {
	if d.LastDisconnect == nil {
		return 0
	}
	n, _ := strconv.ParseUint(d.LastDisconnect.LeaseID, 10, 64)
	return n
}

func (d device) lastReason() string {
	if d.LastDisconnect == nil {
		return ""
	}
	return strings.TrimPrefix(d.LastDisconnect.Reason, "DISCONNECT_REASON_")
}

func (d device) lastRestart() string {
	if d.LastDisconnect == nil {
		return ""
	}
	return strings.TrimPrefix(d.LastDisconnect.Restart, "DEVICE_RESTART_")
}

// listDevices pages through GET /v1/devices (online only, or all) with
// page_size=1000 and nextPageToken.
func listDevices(base string, onlineOnly bool) ([]device, error) {
	var out []device
	token := ""
	for page := 0; ; page++ {
		u := base + "/v1/devices?page_size=1000"
		if onlineOnly {
			u += "&presence=PRESENCE_FILTER_ONLINE"
		}
		if token != "" {
			u += "&page_token=" + url.QueryEscape(token)
		}
		var resp struct {
			Devices       []device `json:"devices"`
			NextPageToken string   `json:"nextPageToken"`
		}
		if err := getJSON(u, &resp); err != nil {
			return nil, err
		}
		out = append(out, resp.Devices...)
		if resp.NextPageToken == "" {
			return out, nil
		}
		if page > 100000 {
			return nil, fmt.Errorf("listing %s: no end after %d pages", base, page)
		}
		token = resp.NextPageToken
	}
}

// regView is one reading of the registry through the JSON API.
type regView struct {
	all    map[string]device // every device, unfiltered list
	online map[string]device // the PRESENCE_FILTER_ONLINE list
}

// readRegistry reads the online list, then the full list. Devices whose id
// does not start with prefix are ignored.
func readRegistry(base, prefix string) (regView, error) {
	r := regView{all: map[string]device{}, online: map[string]device{}}
	on, err := listDevices(base, true)
	if err != nil {
		return r, err
	}
	for _, d := range on {
		if strings.HasPrefix(d.DeviceID, prefix) {
			if _, dup := r.online[d.DeviceID]; dup {
				return r, fmt.Errorf("device %s listed twice as online", d.DeviceID)
			}
			r.online[d.DeviceID] = d
		}
	}
	all, err := listDevices(base, false)
	if err != nil {
		return r, err
	}
	for _, d := range all {
		if strings.HasPrefix(d.DeviceID, prefix) {
			r.all[d.DeviceID] = d
		}
	}
	return r, nil
}

// onlineOn counts the devices of the online list held by node.
func (r regView) onlineOn(node string) int {
	n := 0
	for _, d := range r.online {
		if d.node() == node {
			n++
		}
	}
	return n
}

// consistent checks that the two lists agree (for a registry that is not
// changing): the online list is exactly the devices that read online in
// the full list, and every online device has a session.
func (r regView) consistent() error {
	for id, d := range r.online {
		if !d.Online || d.Session == nil {
			return fmt.Errorf("%s in the online list with online=%v session=%v", id, d.Online, d.Session != nil)
		}
		if a, ok := r.all[id]; !ok || !a.Online || a.lease() != d.lease() {
			return fmt.Errorf("%s online (lease %d) in the online list, but %+v in the full list", id, d.lease(), a)
		}
	}
	for id, d := range r.all {
		if _, ok := r.online[id]; d.Online && !ok {
			return fmt.Errorf("%s online in the full list but missing from the online list", id)
		}
	}
	return nil
}

// deviceIDs are prefix0 … prefix(n-1), the load generator's ids.
func deviceIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = prefix + strconv.Itoa(i)
	}
	return ids
}

// poll calls f every `every` until it returns nil, or fails the test with
// f's last error after limit. It returns when f succeeded.
func pollUntil(t *testing.T, limit, every time.Duration, what string, f func() error) time.Time {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := f()
		if err == nil {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, limit, err)
		}
		time.Sleep(every)
	}
}

// waitAllOnline waits until exactly the n devices prefix0… read online on
// base (through both lists) and returns that reading.
func waitAllOnline(t *testing.T, base, prefix string, n int, limit time.Duration) regView {
	t.Helper()
	var reg regView
	pollUntil(t, limit, 250*time.Millisecond, fmt.Sprintf("%d devices %s* online", n, prefix), func() error {
		var err error
		if reg, err = readRegistry(base, prefix); err != nil {
			return err
		}
		if len(reg.online) != n {
			return fmt.Errorf("%d of %d online", len(reg.online), n)
		}
		for _, id := range deviceIDs(prefix, n) {
			if !reg.all[id].Online {
				return fmt.Errorf("%s not online in the full list", id)
			}
		}
		return reg.consistent()
	})
	return reg
}

// durations summarises measured durations.
type durations []time.Duration

func (d durations) sorted() durations {
	s := slices.Clone(d)
	slices.Sort(s)
	return s
}

func (d durations) max() time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Max(d)
}

// String is "min/p50/max a/b/c" in seconds, 2 decimals.
func (d durations) String() string {
	if len(d) == 0 {
		return "n/a"
	}
	s := d.sorted()
	return fmt.Sprintf("min/p50/max %s/%s/%s", fmtSecs(s[0]), fmtSecs(s[(len(s)-1)/2]), fmtSecs(s[len(s)-1]))
}

func fmtSecs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

// faultRow is the scenario's line of the report, written when the test ends
// (marked FAILED or skipped when it did not pass).
type faultRow struct {
	scenario, injected, asserted string
	mu                           sync.Mutex
	measured                     []string
	skip                         string
}

// reportMu serialises appends to the report file.
var reportMu sync.Mutex

func newFaultRow(t *testing.T, scenario, injected, asserted string) *faultRow {
	r := &faultRow{scenario: scenario, injected: injected, asserted: asserted}
	t.Cleanup(func() { r.write(t) })
	return r
}

// add records a measured result.
func (r *faultRow) add(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.measured = append(r.measured, fmt.Sprintf(format, a...))
}

// skipTest records why the scenario did not run and skips the test.
func (r *faultRow) skipTest(t *testing.T, why string) {
	t.Helper()
	r.mu.Lock()
	r.skip = why
	r.mu.Unlock()
	t.Skip(why)
}

func (r *faultRow) write(t *testing.T) {
	r.mu.Lock()
	measured := strings.Join(r.measured, "; ")
	skip := r.skip
	r.mu.Unlock()
	switch {
	case skip != "":
		measured = "SKIPPED: " + skip
	case t.Failed() && measured != "":
		measured = "**FAILED** (see the test log); measured before the failure: " + measured
	case t.Failed():
		measured = "**FAILED** (see the test log)"
	}
	mode := bySize("full", "reduced")
	line := fmt.Sprintf("| %s | %s | %s | %s |\n", mdCell(r.scenario+" ("+t.Name()+", "+mode+")"), mdCell(r.injected), mdCell(r.asserted), mdCell(measured))
	t.Logf("report row: %s", strings.TrimSpace(line))
	path := os.Getenv("TETHER_FAULTS_REPORT")
	if path == "" {
		return
	}
	reportMu.Lock()
	defer reportMu.Unlock()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Errorf("report: %v", err)
		return
	}
	defer f.Close()
	if _, err := f.WriteString(line); err != nil {
		t.Errorf("report: %v", err)
	}
}

func mdCell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}
