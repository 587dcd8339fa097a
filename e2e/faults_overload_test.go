package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/testredis"
)

// cpuQuota confines a process to a share of one CPU with a CPU cgroup: the
// v2 cpu.max where the unified hierarchy has the cpu controller, else the v1
// cpu controller's CFS quota. The returned function lifts it (also run at
// cleanup). It fails (and the caller skips) without root or a cpu
// controller.
func cpuQuota(t *testing.T, pid int, share float64) (lift func(), how string, err error) {
	t.Helper()
	const period = 100000 // µs
	quota := int(share * period)
	name := fmt.Sprintf("tether-e2e-%d-%d", os.Getpid(), pid)
	var dir, root, procs string
	var write func() error
	if b, e := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); e == nil && strings.Contains(" "+string(b)+" ", " cpu ") {
		root = "/sys/fs/cgroup"
		dir = filepath.Join(root, name)
		_ = os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), []byte("+cpu"), 0o644)
		write = func() error {
			return os.WriteFile(filepath.Join(dir, "cpu.max"), []byte(fmt.Sprintf("%d %d", quota, period)), 0o644)
		}
		how = fmt.Sprintf("cgroup v2 cpu.max %d %d", quota, period)
	} else if _, e := os.Stat("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"); e == nil {
		root = "/sys/fs/cgroup/cpu"
		dir = filepath.Join(root, name)
		write = func() error {
			if err := os.WriteFile(filepath.Join(dir, "cpu.cfs_period_us"), []byte(strconv.Itoa(period)), 0o644); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, "cpu.cfs_quota_us"), []byte(strconv.Itoa(quota)), 0o644)
		}
		how = fmt.Sprintf("cgroup v1 cpu.cfs_quota_us %d / cpu.cfs_period_us %d", quota, period)
	} else {
		return nil, "", errors.New("no cpu cgroup controller (neither /sys/fs/cgroup/cgroup.controllers with cpu nor /sys/fs/cgroup/cpu)")
	}
	procs = "cgroup.procs"
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, "", err
	}
	remove := func() {
		_ = os.WriteFile(filepath.Join(root, procs), []byte(strconv.Itoa(pid)), 0o644)
		for i := 0; i < 50; i++ {
			if os.Remove(dir) == nil || errors.Is(os.Remove(dir), os.ErrNotExist) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if err := write(); err != nil {
		remove()
		return nil, "", err
	}
	if err := os.WriteFile(filepath.Join(dir, procs), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		remove()
		return nil, "", err
	}
	done := false
	lift = func() {
		if !done {
			done = true
			remove()
		}
	}
	t.Cleanup(lift)
	return lift, how, nil
}

// TestFaultCPUStarvedReplica (issue #16): a replica confined to a fraction
// of one CPU holds N healthy sessions when N more devices storm in at once.
// An overloaded replica must slow down, not kill: the held agents, which
// answer every Ping, must see no PING_TIMEOUT (the timeout waits for
// evidence of silence), the storm is shed with Close(OVERLOADED) and a
// jittered retry_after where the replica cannot keep up, and it converges
// while the replica is still starved: all 2N online with the right
// sessions, none ended.
func TestFaultCPUStarvedReplica(t *testing.T) {
	n := bySize(2000, 300)
	share := bySize(0.25, 0.2)
	lv := faultLiveness()
	shedLatency := 50 * time.Millisecond
	row := newFaultRow(t, fmt.Sprintf("8. CPU-starved replica, %d sessions held, %d more storm in (issue #16)", n, n),
		fmt.Sprintf("the replica confined to %.0f %% of one CPU by a CPU cgroup quota (100 ms period), then a second loadgen connects %d new devices as fast as it can (256 dials in flight); server --shed-sched-latency %v --shed-retry-after 2s; %v", 100*share, n, shedLatency, lv),
		fmt.Sprintf("while starved: 0 PING_TIMEOUT for the %d held sessions and for the storm's once up (server and loadgens), 0 sessions ended; the storm converges (all %d online with their own leases, sessions held = online) within 3 min, still starved", n, 2*n))
	rd := testredis.Start(t)
	srv := startReplica(t, "ov", rd.URL(), "", lv, "--shed-sched-latency", shedLatency.String(), "--shed-retry-after", "2s")
	const heldPrefix, stormPrefix = "ovh-", "ovs-"
	held := startLoadgen(t, "tether-loadgen held", "--server", srv.grpc, "--devices", strconv.Itoa(n), "--id-prefix", heldPrefix)
	before := waitAllOnline(t, srv.base(), heldPrefix, n, 90*time.Second)
	// A few ping rounds at full speed first: every held session is pinging.
	time.Sleep(lv.interval + lv.timeout)

	lift, how, err := cpuQuota(t, srv.p.cmd.Process.Pid, share)
	if err != nil {
		row.skipTest(t, "cannot confine the replica's CPU: "+err.Error())
	}
	pingTimeouts0 := srv.metric(t, "tether_disconnects_total", "reason", "ping_timeout")
	ended0 := srv.metric(t, "tether_disconnects_total")
	deferred0 := srv.metric(t, "tether_ping_timeouts_deferred_total")
	shed0 := srv.metric(t, "tether_hello_shed_total")
	shedPending0 := srv.metric(t, "tether_hello_shed_total", "signal", "pending")
	shedSched0 := srv.metric(t, "tether_hello_shed_total", "signal", "sched")
	// Starved, and still holding its sessions for a ping round before the
	// storm: the held agents' pings must not time out from this alone.
	time.Sleep(lv.interval)

	stormAt := time.Now()
	storm := startLoadgen(t, "tether-loadgen storm", "--server", srv.grpc, "--devices", strconv.Itoa(n), "--id-prefix", stormPrefix)
	var stormView regView
	converged := pollUntil(t, 3*time.Minute, 250*time.Millisecond, "the storm converges while the replica is starved", func() error {
		var err error
		if stormView, err = readRegistry(srv.base(), stormPrefix); err != nil {
			return err
		}
		if len(stormView.online) < n {
			return fmt.Errorf("%d of %d storm devices online", len(stormView.online), n)
		}
		return nil
	})
	// Still starved: hold the 2N for two more ping rounds.
	time.Sleep(2 * lv.bound())
	pingTimeouts := srv.metric(t, "tether_disconnects_total", "reason", "ping_timeout") - pingTimeouts0
	ended := srv.metric(t, "tether_disconnects_total") - ended0
	deferred := srv.metric(t, "tether_ping_timeouts_deferred_total") - deferred0
	shedPending := srv.metric(t, "tether_hello_shed_total", "signal", "pending") - shedPending0
	shedSched := srv.metric(t, "tether_hello_shed_total", "signal", "sched") - shedSched0
	shed := srv.metric(t, "tether_hello_shed_total") - shed0
	heldView, err := readRegistry(srv.base(), heldPrefix)
	if err != nil {
		t.Fatal(err)
	}
	stormView, err = readRegistry(srv.base(), stormPrefix)
	if err != nil {
		t.Fatal(err)
	}
	sessions := srv.sessions(t)
	lift()

	var bad problems
	for id, old := range before.online {
		if d := heldView.all[id]; !d.Online || d.lease() != old.lease() {
			bad.add("%s: online=%v lease %d, want its own lease %d (last end %s)", id, d.Online, d.lease(), old.lease(), d.lastReason())
		}
	}
	if len(stormView.online) != n {
		bad.add("%d of %d storm devices online at the end", len(stormView.online), n)
	}
	bad.report(t, "while starved")
	if pingTimeouts != 0 || ended != 0 {
		t.Errorf("the starved replica ended %.0f sessions (%.0f PING_TIMEOUT); want 0", ended, pingTimeouts)
	}
	if sessions != 2*n {
		t.Errorf("sessions held %d, want %d online", sessions, 2*n)
	}
	hr, sr := held.finish(t), storm.finish(t)
	for name, r := range map[string]int64{
		"held PING_TIMEOUT": hr.ClosedByReason["PING_TIMEOUT"], "held closed": sumCounts(hr.ClosedByReason), "held broken": sumCounts(hr.StreamErrorsByCode),
		"storm PING_TIMEOUT": sr.ClosedByReason["PING_TIMEOUT"], "storm closed": sumCounts(sr.ClosedByReason), "storm broken": sumCounts(sr.StreamErrorsByCode),
	} {
		if r != 0 {
			t.Errorf("loadgen: %s = %d, want 0", name, r)
		}
	}
	row.add("%s; storm of %d converged %s after it began (%d connect attempts, refusals %v; Hellos shed %.0f: pending %.0f, sched %.0f); "+
		"ping timeouts deferred on signs of life %.0f; PING_TIMEOUT: server %.0f, held agents %d, storm agents %d; sessions ended %.0f; held sessions with their own lease %d of %d; sessions held %d = online %d",
		how, n, fmtSecs(converged.Sub(stormAt)), sr.ConnectAttempts, sr.ConnectFailuresByCode, shed, shedPending, shedSched,
		deferred, pingTimeouts, hr.ClosedByReason["PING_TIMEOUT"], sr.ClosedByReason["PING_TIMEOUT"], ended, n-bad.n, n, sessions, len(heldView.online)+len(stormView.online))
}
