package e2e

// The ambiguous Redis faults of issue #12: error replies (OOM, BUSY,
// READONLY), replies lost after the command ran, one shard of a cluster
// restarted empty, a Sentinel failover that loses acknowledged writes. Each
// scenario runs real tether-server and tether-loadgen binaries against real
// redis-server processes (internal/testredis) and asserts the registry's
// promise once the fault is over:
//
//   - live sessions ended 0 (the server's tether_disconnects_total, minus
//     the sessions the test closed itself, and the load generator's report);
//   - devices online without a session 0 within the reconciliation bound
//     (--reconcile-interval + --store-timeout + --mirror-interval + 3 s of
//     grace): every device the test closed during the fault reads offline,
//     every session the replica holds reads online with its own lease, and
//     the replica's tether_sessions gauge equals the online count;
//   - leases never lower than before: devices that come back get a lease
//     above every lease the registry showed for them;
//   - a watcher resuming after an event id the stream can no longer serve
//     (the registry lost it) is told to re-snapshot (an error), never
//     silently given nothing.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tetherhq/tether/internal/lostreply"
	"github.com/tetherhq/tether/internal/testredis"
)

// ambConfig is the replicas' configuration for the ambiguous faults.
type ambConfig struct {
	lv                                     liveness
	reconcile, storeTimeout, mirror, fault time.Duration
}

// ambiguousConfig is the production defaults (mirror interval 5 s, so that
// Touch batches run during the fault) in full mode; short settings with
// --reconcile-interval 2s in reduced mode. The lease TTL is longer than the
// fault, so the replica's node key outlives it and what is tested is the
// error replies, not a lost node.
func ambiguousConfig() ambConfig {
	if faultsFull() {
		return ambConfig{liveness{10 * time.Second, 5 * time.Second, 15 * time.Second}, 10 * time.Second, 5 * time.Second, 5 * time.Second, 10 * time.Second}
	}
	return ambConfig{liveness{2 * time.Second, 1 * time.Second, 10 * time.Second}, 2 * time.Second, 1 * time.Second, 1 * time.Second, 3 * time.Second}
}

func (c ambConfig) args() []string {
	return []string{"--reconcile-interval", c.reconcile.String(), "--store-timeout", c.storeTimeout.String(), "--mirror-interval", c.mirror.String()}
}

// bound is how long after the fault a phantom may still read online:
// a reconciliation pass, a store round trip, a mirror batch, and grace for a
// busy machine. It is under 30 s with the production defaults.
func (c ambConfig) bound() time.Duration {
	return c.reconcile + c.storeTimeout + c.mirror + 3*time.Second
}

func (c ambConfig) String() string {
	return fmt.Sprintf("%v; --reconcile-interval %v --store-timeout %v --mirror-interval %v", c.lv, c.reconcile, c.storeTimeout, c.mirror)
}

// ambSetup is replicas on one registry with n load-generated sessions that
// must survive the fault.
type ambSetup struct {
	cfg     ambConfig
	srvs    []*freplica
	lg      *loadgenProc
	prefix  string
	n       int
	before  regView
	metrics []scrape // each replica's metrics when all were online
}

// startAmbiguous starts one replica per URL (nodes am0, am1, …) and a load
// generator of n devices spread over them.
func startAmbiguous(t *testing.T, cfg ambConfig, prefix string, n int, redisURLs ...string) *ambSetup {
	t.Helper()
	names := make([]string, len(redisURLs))
	for i := range names {
		names[i] = "am" + strconv.Itoa(i)
	}
	return startAmbiguousNamed(t, cfg, prefix, n, names, redisURLs...)
}

// startAmbiguousNamed is startAmbiguous with the replicas' node names.
func startAmbiguousNamed(t *testing.T, cfg ambConfig, prefix string, n int, names []string, redisURLs ...string) *ambSetup {
	t.Helper()
	s := &ambSetup{cfg: cfg, prefix: prefix, n: n}
	var grpcs []string
	for i, u := range redisURLs {
		r := startReplica(t, names[i], u, "", cfg.lv, cfg.args()...)
		s.srvs = append(s.srvs, r)
		grpcs = append(grpcs, r.grpc)
	}
	s.lg = startLoadgen(t, "tether-loadgen", "--server", strings.Join(grpcs, ","), "--devices", strconv.Itoa(n), "--id-prefix", prefix)
	s.before = waitAllOnline(t, s.base(), prefix, n, 60*time.Second)
	for _, r := range s.srvs {
		s.metrics = append(s.metrics, mustScrape(t, "http://"+r.metrics+"/metrics"))
	}
	return s
}

func (s *ambSetup) base() string { return s.srvs[0].base() }

func (s *ambSetup) grpcs() string {
	var g []string
	for _, r := range s.srvs {
		g = append(g, r.grpc)
	}
	return strings.Join(g, ",")
}

// group starts a load generator of k more devices (prefix) and waits until
// they are online; the test closes it during the fault.
func (s *ambSetup) group(t *testing.T, name, prefix string, k int) (*loadgenProc, regView) {
	t.Helper()
	lg := startLoadgen(t, "tether-loadgen ("+name+")", "--server", s.grpcs(), "--devices", strconv.Itoa(k), "--id-prefix", prefix)
	return lg, waitAllOnline(t, s.base(), prefix, k, 60*time.Second)
}

// liveEnded is the number of sessions the replicas ended since the start
// for a reason other than the client closing (CLIENT_CLOSED, the sessions
// the test closed) and ORPHANED (a record no replica held).
func (s *ambSetup) liveEnded(t *testing.T) (int, map[string]float64) {
	t.Helper()
	byReason := map[string]float64{}
	for i, r := range s.srvs {
		now := mustScrape(t, "http://"+r.metrics+"/metrics")
		mf := now["tether_disconnects_total"]
		if mf == nil {
			continue
		}
		for _, m := range mf.GetMetric() {
			reason := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					reason = l.GetValue()
				}
			}
			byReason[reason] += m.GetCounter().GetValue() - s.metrics[i].value("tether_disconnects_total", "reason", reason)
		}
	}
	ended := 0
	for reason, v := range byReason {
		if r := strings.ToUpper(reason); r != "CLIENT_CLOSED" && r != "ORPHANED" {
			ended += int(v)
		}
	}
	return ended, byReason
}

// outcomes summarises what the replicas' registry calls met since the start:
// the non-applied outcome classes by operation
// (tether_registry_outcomes_total), re-mirrors and orphans ended. Absent
// metrics read 0.
func (s *ambSetup) outcomes(t *testing.T) string {
	t.Helper()
	counts := map[string]float64{}
	var remirrors, orphans float64
	for i, r := range s.srvs {
		now := mustScrape(t, "http://"+r.metrics+"/metrics")
		remirrors += now.value("tether_registry_remirrors_total") - s.metrics[i].value("tether_registry_remirrors_total")
		orphans += now.value("tether_registry_orphans_ended_total") - s.metrics[i].value("tether_registry_orphans_ended_total")
		mf := now["tether_registry_outcomes_total"]
		if mf == nil {
			continue
		}
		for _, m := range mf.GetMetric() {
			var op, outcome string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "op":
					op = l.GetValue()
				case "outcome":
					outcome = l.GetValue()
				}
			}
			if outcome == "applied" {
				continue
			}
			if d := m.GetCounter().GetValue() - s.metrics[i].value("tether_registry_outcomes_total", "op", op, "outcome", outcome); d > 0 {
				counts[op+" "+outcome] += d
			}
		}
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.0f", k, counts[k]))
	}
	if len(parts) == 0 {
		parts = []string{"none"}
	}
	return fmt.Sprintf("registry outcomes other than applied: %s; re-mirrors %.0f; orphans ended %.0f", strings.Join(parts, ", "), remirrors, orphans)
}

// checkStayedUp asserts that no live session ended and the load generator
// of the n saw nothing.
func (s *ambSetup) checkStayedUp(t *testing.T) string {
	t.Helper()
	ended, byReason := s.liveEnded(t)
	if ended != 0 {
		t.Errorf("%d live sessions ended on the replicas during the fault (disconnects by reason since the start: %v)", ended, byReason)
	}
	rep := s.lg.finish(t)
	c, b := sumCounts(rep.ClosedByReason), sumCounts(rep.StreamErrorsByCode)
	if c != 0 || b != 0 || rep.ConnectAttempts != int64(rep.TargetDevices) {
		t.Errorf("the load generator of the %d saw %d closed %v, %d broken streams %v, %d connect attempts for %d devices", s.n, c, rep.ClosedByReason, b, rep.StreamErrorsByCode, rep.ConnectAttempts, rep.TargetDevices)
	}
	return fmt.Sprintf("live sessions ended %d (server), loadgen %d closed %d broken", ended, c, b)
}

// exact waits until the registry reads exactly right: the n online with
// their own leases, the devices of each gone prefix offline, the sessions of
// each live prefix online, and the replicas' tether_sessions gauges adding
// up to the online count. It returns when that first held, and the reading.
func (s *ambSetup) exact(t *testing.T, limit time.Duration, gone []string, live map[string]int) (time.Time, map[string]regView) {
	t.Helper()
	views := map[string]regView{}
	at := pollUntil(t, limit, 100*time.Millisecond, "the registry exact (no phantom, no session missing)", func() error {
		reg, err := readRegistry(s.base(), s.prefix)
		if err != nil {
			return err
		}
		if len(reg.online) != s.n {
			return fmt.Errorf("%d of the %d live sessions online", len(reg.online), s.n)
		}
		for id, old := range s.before.online {
			if d := reg.all[id]; !d.Online || d.lease() != old.lease() || d.node() != old.node() {
				return fmt.Errorf("%s online=%v lease %d on %s, want its own lease %d on %s", id, d.Online, d.lease(), d.node(), old.lease(), old.node())
			}
		}
		if err := reg.consistent(); err != nil {
			return err
		}
		views[s.prefix] = reg
		online := s.n
		for _, p := range gone {
			v, err := readRegistry(s.base(), p)
			if err != nil {
				return err
			}
			if len(v.online) != 0 {
				var ids []string
				for id, d := range v.online {
					ids = append(ids, fmt.Sprintf("%s (lease %d on %s)", id, d.lease(), d.node()))
				}
				return fmt.Errorf("%d devices online without a session: %s", len(v.online), strings.Join(firstN(ids, 5), ", "))
			}
			views[p] = v
		}
		for p, k := range live {
			v, err := readRegistry(s.base(), p)
			if err != nil {
				return err
			}
			if len(v.online) != k {
				return fmt.Errorf("%d of %d sessions %s* online", len(v.online), k, p)
			}
			if err := v.consistent(); err != nil {
				return err
			}
			views[p] = v
			online += k
		}
		held := 0
		for _, r := range s.srvs {
			held += r.sessions(t)
		}
		if held != online {
			return fmt.Errorf("the replicas hold %d sessions, %d read online", held, online)
		}
		return nil
	})
	return at, views
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("… (%d more)", len(s)-n))
	}
	return s
}

// maxLeases records, per device, the highest lease a reading shows (current
// or last ended).
func maxLeases(into map[string]uint64, v regView) {
	for id, d := range v.all {
		into[id] = max(into[id], d.lease(), d.lastLease())
	}
}

// comeBack connects the k devices of prefix again and checks that each gets
// a lease above every lease seen for it (floor). It returns the number of
// lower-or-equal leases.
func (s *ambSetup) comeBack(t *testing.T, prefix string, k int, floor map[string]uint64) int {
	t.Helper()
	lg := startLoadgen(t, "tether-loadgen (back: "+prefix+")", "--server", s.grpcs(), "--devices", strconv.Itoa(k), "--id-prefix", prefix)
	v := waitAllOnline(t, s.base(), prefix, k, 60*time.Second)
	var bad problems
	for id, d := range v.online {
		if d.lease() <= floor[id] {
			bad.add("%s came back with lease %d, not above %d seen before", id, d.lease(), floor[id])
		}
	}
	bad.report(t, "leases never lower ("+prefix+")")
	lg.finish(t)
	return bad.n
}

// resumeOutcome opens the watch on base resuming after id and reads for up
// to limit: refused is true when the server answered an error (an HTTP
// error status or an error line), the way it tells a client to re-snapshot.
func resumeOutcome(base, after string, limit time.Duration) (refused bool, saw string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/devices:watch?after_event_id="+url.QueryEscape(after), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 500))
		return true, fmt.Sprintf("HTTP %s: %s", resp.Status, strings.TrimSpace(string(b))), nil
	}
	events := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var w watchLine
		if json.Unmarshal(sc.Bytes(), &w) != nil {
			continue
		}
		if len(w.Error) > 0 {
			return true, "error line " + string(w.Error), nil
		}
		if w.Result.Event.EventID != "" {
			events++
		}
	}
	return false, fmt.Sprintf("%d events and no error in %v", events, limit), nil
}

// lastEventID is the id of the newest entry of the registry's event stream
// (the ids the watch API hands out), "" when there is none.
func lastEventID(t *testing.T, c redis.Cmdable) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	last, err := c.XRevRangeN(ctx, "tether:events", "+", "-", 1).Result()
	if err != nil {
		t.Fatalf("reading the event stream: %v", err)
	}
	if len(last) == 0 {
		return ""
	}
	return last[0].ID
}

// streamIDLess compares two stream ids ms-seq.
func streamIDLess(a, b string) bool {
	pa, pb := strings.SplitN(a, "-", 2), strings.SplitN(b, "-", 2)
	if len(pa) != 2 || len(pb) != 2 {
		return a < b
	}
	ma, _ := strconv.ParseUint(pa[0], 10, 64)
	mb, _ := strconv.ParseUint(pb[0], 10, 64)
	if ma != mb {
		return ma < mb
	}
	sa, _ := strconv.ParseUint(pa[1], 10, 64)
	sb, _ := strconv.ParseUint(pb[1], 10, 64)
	return sa < sb
}

// checkResume asserts that resuming after id is refused, and returns the
// row's note.
func checkResume(t *testing.T, base, id string) string {
	t.Helper()
	refused, saw, err := resumeOutcome(base, id, 3*time.Second)
	switch {
	case err != nil:
		t.Errorf("watch resuming after %s: %v", id, err)
		return "watch resume: " + err.Error()
	case !refused:
		t.Errorf("a watcher resuming after %s (an event the registry lost) was not told to re-snapshot: %s", id, saw)
		return "watch resume after a lost event NOT refused (" + saw + ")"
	}
	return "watch resume after a lost event refused (re-snapshot)"
}

// resumeAfterLost resumes a watch after lostID, an event the registry lost
// (the new master never had it). While the new stream's newest id is below
// lostID the stream cannot serve it and the server must refuse; once repair
// events (re-mirror, reconciliation) have ids above it, serving them is
// consistent, so a resume that was answered with events is only reported.
func resumeAfterLost(t *testing.T, base string, c redis.Cmdable, lostID string) string {
	t.Helper()
	before := lastEventID(t, c)
	refused, saw, err := resumeOutcome(base, lostID, 3*time.Second)
	after := lastEventID(t, c)
	switch {
	case err != nil:
		t.Errorf("watch resuming after %s: %v", lostID, err)
		return "watch resume: " + err.Error()
	case refused:
		return "watch resume after the lost last event refused (re-snapshot)"
	case after == "" || streamIDLess(after, lostID):
		t.Errorf("a watcher resuming after %s (an event the registry lost; the stream's newest is %q) was not told to re-snapshot: %s", lostID, after, saw)
		return "watch resume after the lost last event NOT refused (" + saw + ")"
	}
	return fmt.Sprintf("watch resume after the lost last event served %s (the new master's stream went from %q to %q, past the lost id, during the check: not asserted)", saw, before, after)
}

// errorReplyFault is one kind of Redis error reply.
type errorReplyFault struct {
	name   string
	inject func(t *testing.T, rd *testredis.Server) (lift func())
	// restartFaulty restarts rd empty and already answering the error.
	restartFaulty func(t *testing.T, rd *testredis.Server) (lift func())
	how           string
	restartHow    string // how restartFaulty does it
}

var errorReplyFaults = map[string]errorReplyFault{
	"OOM": {
		name: "OOM",
		inject: func(t *testing.T, rd *testredis.Server) func() {
			rd.OOM()
			return rd.NoOOM
		},
		restartFaulty: func(t *testing.T, rd *testredis.Server) func() {
			rd.RestartWith("--maxmemory", "1", "--maxmemory-policy", "noeviction")
			return rd.NoOOM
		},
		how:        "`CONFIG SET maxmemory 1` with noeviction (every write answers -OOM)",
		restartHow: "restarted empty with --maxmemory 1 (-OOM from its first write)",
	},
	"BUSY": {
		name: "BUSY",
		inject: func(t *testing.T, rd *testredis.Server) func() {
			wait := rd.Busy(ambiguousConfig().fault, 50*time.Millisecond)
			return func() {
				if err := wait(); err != nil {
					t.Errorf("busy script: %v", err)
				}
			}
		},
		restartFaulty: func(t *testing.T, rd *testredis.Server) func() {
			rd.Restart()
			wait := rd.Busy(ambiguousConfig().fault, 50*time.Millisecond)
			return func() {
				if err := wait(); err != nil {
					t.Errorf("busy script: %v", err)
				}
			}
		},
		how:        "a script spinning for the fault's length from another client, busy-reply-threshold 50 ms (every command answers -BUSY)",
		restartHow: "restarted empty, the busy script started right after it answers PING (-BUSY 50 ms later)",
	},
	"READONLY": {
		name: "READONLY",
		inject: func(t *testing.T, rd *testredis.Server) func() {
			rd.ReadOnly()
			return rd.Writable
		},
		restartFaulty: func(t *testing.T, rd *testredis.Server) func() {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
			l.Close()
			rd.RestartWith("--replicaof", "127.0.0.1", port)
			return rd.Writable
		},
		how:        "`REPLICAOF` a master that does not exist (data kept, every write answers -READONLY)",
		restartHow: "restarted empty with --replicaof a master that does not exist (-READONLY from its first write)",
	},
}

func TestFaultRedisErrorReplyOOM(t *testing.T)  { runErrorReplyFault(t, errorReplyFaults["OOM"]) }
func TestFaultRedisErrorReplyBusy(t *testing.T) { runErrorReplyFault(t, errorReplyFaults["BUSY"]) }
func TestFaultRedisErrorReplyReadOnly(t *testing.T) {
	runErrorReplyFault(t, errorReplyFaults["READONLY"])
}

// runErrorReplyFault: N live sessions on one replica. Phase 1: Redis
// answers every write with the error for the fault's length while the
// mirror's Touch batches run, K devices close their sessions (Release) and
// M new devices try to connect (Claim) and give up before it ends. Phase 2:
// Redis restarts empty and answers the error from its first write (OOM,
// READONLY: arguments of the new process) or within milliseconds of its
// first PING (BUSY: the script cannot run before the server does) for the
// fault's length, so the replica's re-mirror meets it. Afterwards the
// registry must be exact within the bound: the N online with their own
// leases, the K and M offline, no session ended; the K and M coming back get
// higher leases; a watcher resuming from before the restart is refused.
func runErrorReplyFault(t *testing.T, f errorReplyFault) {
	n, k, m := bySize(1000, 50), bySize(50, 10), bySize(50, 10)
	cfg := ambiguousConfig()
	p := strings.ToLower(f.name)
	prefix, relPrefix, churnPrefix := p+"-", p+"R-", p+"C-"
	row := newFaultRow(t, fmt.Sprintf("12a. Redis error reply %s during Touch, Claim, Release and re-mirror, %d sessions", f.name, n),
		fmt.Sprintf("%s for %v while %d devices disconnect and %d new ones try to connect (and give up); then Redis %s, for %v; %v", f.how, cfg.fault, k, m, f.restartHow, cfg.fault, cfg),
		fmt.Sprintf("live sessions ended 0; within %v after the fault: the %d online with their own leases, the %d+%d offline, sessions held = online; leases of returning devices higher; a watch resume from before the restart refused", cfg.bound(), n, k, m))
	rd := testredis.Start(t)
	s := startAmbiguous(t, cfg, prefix, n, rd.URL())
	rel, relView := s.group(t, "closed during the fault", relPrefix, k)
	seen := map[string]uint64{}
	maxLeases(seen, relView)

	// Phase 1: Touch, Release, Claim meet the error.
	began := time.Now()
	lift := f.inject(t, rd)
	rel.finish(t)
	churn := startLoadgen(t, "tether-loadgen (connecting during the fault)", "--server", s.grpcs(), "--devices", strconv.Itoa(m), "--id-prefix", churnPrefix)
	time.Sleep(time.Until(began.Add(cfg.fault)))
	churnRep := churn.finish(t)
	lift()
	phase1 := time.Now()
	ended1, byReason1 := s.liveEnded(t)
	row.add("phase 1: live sessions ended during the error %d (disconnects by reason %v); %d of the %d connecting devices got in during it (%d failed attempts %v)",
		ended1, byReason1, churnRep.EverConnected, m, churnRep.ConnectFailures, churnRep.ConnectFailuresByCode)
	phase1At, _ := s.exact(t, cfg.bound(), []string{relPrefix, churnPrefix}, nil)
	row.add("registry exact %s after the error ended", fmtSecs(phase1At.Sub(phase1)))

	// Phase 2: the re-mirror meets the error.
	lastID := lastEventID(t, rd.Client())
	restarted := time.Now()
	lift = f.restartFaulty(t, rd)
	time.Sleep(time.Until(restarted.Add(cfg.fault)))
	lift()
	lifted := time.Now()
	exactAt, views := s.exact(t, cfg.bound(), []string{relPrefix, churnPrefix}, nil)
	for _, v := range views {
		maxLeases(seen, v)
	}
	watch := "no event before the restart"
	if lastID != "" {
		watch = checkResume(t, s.base(), lastID)
	}
	row.add("%s", s.outcomes(t))
	stayed := s.checkStayedUp(t)
	lower := s.comeBack(t, relPrefix, k, seen) + s.comeBack(t, churnPrefix, m, seen)
	row.add("phase 2 (restart empty + %s): exact %s after it ended; %s; returning devices with a lease not above the last seen: %d of %d; %s",
		f.name, fmtSecs(exactAt.Sub(lifted)), stayed, lower, k+m, watch)
}

// TestFaultRedisLostReplies: the replica reaches Redis through a proxy
// (internal/lostreply) that forwards requests at once and holds replies.
// Phase 1: every reply is held longer than the replica's --store-timeout
// while K devices disconnect: Touch batches and Releases run in Redis, the
// replica never learns it. Phase 2: every reply is held 0.7 × the store
// timeout while M new devices try to connect and give up: a new device's
// Claim is two round trips (a pipeline, then the claim script), so the
// script runs just after the first held reply, and its own reply arrives
// after the timeout; the devices give up (loadgen --dial-timeout = the store
// timeout) before it arrives — a record naming the replica, which holds no
// session for it (a phantom). Afterwards: no live session ended, no phantom after the
// bound, leases of returning devices higher.
func TestFaultRedisLostReplies(t *testing.T) {
	n, k, m := bySize(1000, 50), bySize(50, 10), bySize(50, 10)
	cfg := ambiguousConfig()
	holdAll := cfg.storeTimeout + cfg.storeTimeout/2
	holdClaim := cfg.storeTimeout * 7 / 10
	row := newFaultRow(t, fmt.Sprintf("12b. Lost Redis replies, %d sessions", n),
		fmt.Sprintf("internal/lostreply proxy between the replica and Redis: every reply held %v (> --store-timeout) for %v while %d devices disconnect; then every reply held %v (a new device's claim script runs, its reply comes too late) for %v while %d new devices try to connect, each attempt giving up after the store timeout; %v", holdAll, cfg.fault, k, holdClaim, cfg.fault, m, cfg),
		fmt.Sprintf("live sessions ended 0; within %v after the fault the %d online with their own leases, the %d+%d offline (no phantom), sessions held = online; leases of returning devices higher", cfg.bound(), n, k, m))
	rd := testredis.Start(t)
	proxy, err := lostreply.New(rd.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	const prefix, relPrefix, churnPrefix = "lr-", "lrR-", "lrC-"
	s := startAmbiguous(t, cfg, prefix, n, "redis://"+proxy.Addr())
	rel, relView := s.group(t, "closed during the fault", relPrefix, k)
	seen := map[string]uint64{}
	maxLeases(seen, relView)

	began := time.Now()
	proxy.Delay(holdAll)
	rel.finish(t)
	time.Sleep(time.Until(began.Add(cfg.fault)))
	proxy.Delay(holdClaim)
	// Each attempt gives up after the store timeout: after the claim script
	// was sent (at 0.7 × the timeout), before its reply (at 1.4 ×).
	churn := startLoadgen(t, "tether-loadgen (connecting during the fault)", "--server", s.grpcs(), "--devices", strconv.Itoa(m), "--id-prefix", churnPrefix,
		"--dial-timeout", cfg.storeTimeout.String())
	time.Sleep(time.Until(began.Add(2 * cfg.fault)))
	churnRep := churn.finish(t)
	proxy.Forward()
	proxy.CloseConns() // replies still held are lost for good
	lifted := time.Now()
	// What Redis itself says right after the fault: records of the M that
	// name the replica although it holds none of them (phantoms).
	phantoms := countPhantoms(t, rd.Client(), churnPrefix, m, s.srvs[0].node)
	row.add("%d reply bytes held, %d dropped; right after the fault Redis named the replica for %d of the %d devices that gave up (phantoms, or releases of attempts that got in still in flight; %d of %d connect attempts failed)",
		proxy.Held(), proxy.Dropped(), phantoms, m, churnRep.ConnectFailures, churnRep.ConnectAttempts)
	exactAt, views := s.exact(t, cfg.bound(), []string{relPrefix, churnPrefix}, nil)
	for _, v := range views {
		maxLeases(seen, v)
	}
	row.add("%s", s.outcomes(t))
	stayed := s.checkStayedUp(t)
	lower := s.comeBack(t, relPrefix, k, seen) + s.comeBack(t, churnPrefix, m, seen)
	row.add("registry exact %s after the fault; %s; returning devices with a lease not above the last seen: %d of %d",
		fmtSecs(exactAt.Sub(lifted)), stayed, lower, k+m)
}

// countPhantoms counts the devices prefix0…(m-1) whose hash in Redis
// names node as holding a session, read directly (tether:{d:<id>} s_node).
func countPhantoms(t *testing.T, c redis.Cmdable, prefix string, m int, node string) int {
	t.Helper()
	n := 0
	for _, id := range deviceIDs(prefix, m) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		v, err := c.HGet(ctx, "tether:{d:"+id+"}", "s_node").Result()
		cancel()
		if err == nil && v == node {
			n++
		}
	}
	return n
}

// TestFaultRedisClusterShardRestartedEmpty: a 3-master Redis Cluster; two
// replicas, one configured with every master as a seed
// (redis://h1?addr=h2&addr=h3), one with a single seed
// (redis://h1?cluster=true). The master holding the event stream is
// restarted empty; the replicas' node names are chosen so that their node
// keys live on the other masters, so the loss is not visible through them,
// and a watcher resuming from before the restart must be refused. Its
// devices' records are gone; their live sessions must be written back
// within the bound and none may end.
func TestFaultRedisClusterShardRestartedEmpty(t *testing.T) {
	n := bySize(1000, 100)
	cfg := ambiguousConfig()
	row := newFaultRow(t, fmt.Sprintf("12c. One shard of a 3-master Redis Cluster restarted empty, %d sessions", n),
		fmt.Sprintf("testredis Cluster (3 masters, redis-cli --cluster create); one replica on redis://h1?addr=h2&addr=h3, one on redis://h1?cluster=true; kill the master holding the event stream (neither replica's node key is on it) and start it empty with the same nodes.conf; %v", cfg),
		fmt.Sprintf("within %v all %d online again with their own leases; live sessions ended 0; sessions held = online; a watch resume from before the restart refused", cfg.bound(), n))
	cl := testredis.StartCluster(t, 3)
	const prefix = "cs-"
	// The victim is the master holding the event stream; the replicas get
	// node names whose node keys live on other masters.
	victim, err := cl.NodeOf("tether:events")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for i := 0; len(names) < 2; i++ {
		name := "am" + strconv.Itoa(i)
		if i > 1000 {
			t.Fatal("no node names whose node keys avoid the event stream's master")
		}
		if j, err := cl.NodeOf("tether:node:" + name); err != nil {
			t.Fatal(err)
		} else if j != victim {
			names = append(names, name)
		}
	}
	s := startAmbiguousNamed(t, cfg, prefix, n, names, cl.URL(), cl.SeedURL())
	if a, b := s.before.onlineOn(names[0]), s.before.onlineOn(names[1]); a == 0 || b == 0 {
		t.Fatalf("sessions on %s/%s: %d/%d; want them spread", names[0], names[1], a, b)
	}
	onShard := 0
	for _, id := range deviceIDs(prefix, n) {
		if i, err := cl.NodeOf("tether:{d:" + id + "}"); err == nil && i == victim {
			onShard++
		}
	}
	lastID := lastEventID(t, cl.Client())

	killed := time.Now()
	cl.RestartEmpty(victim)
	up := time.Now()
	row.add("master %d restarted empty in %s (%d of %d device records on it)", victim, fmtSecs(up.Sub(killed)), onShard, n)
	exactAt, _ := s.exact(t, cfg.bound(), nil, nil)
	watch := "no event before the restart"
	if lastID != "" {
		watch = checkResume(t, s.base(), lastID)
	}
	row.add("%s", s.outcomes(t))
	stayed := s.checkStayedUp(t)
	row.add("all back with their own leases %s after it was up; %s; %s", fmtSecs(exactAt.Sub(up)), stayed, watch)
}

// TestFaultRedisSentinelLosesAckedWrites: Redis behind Sentinel; the
// replica's replication stream is held back (a delaying proxy), then K
// devices disconnect and M new ones connect (the master acknowledges their
// Release and Claim), and the master is killed: Sentinel promotes the
// replica, which never saw those writes. Afterwards the K must read offline
// (their records on the new master say online: phantoms), the M online
// (their records are missing: written back), the N untouched; no live
// session ended; a watcher resuming after the last (lost) event is told to
// re-snapshot.
func TestFaultRedisSentinelLosesAckedWrites(t *testing.T) {
	n, k, m := bySize(1000, 50), bySize(50, 10), bySize(50, 10)
	cfg := ambiguousConfig()
	row := newFaultRow(t, fmt.Sprintf("12d. Sentinel failover losing acknowledged writes, %d sessions", n),
		fmt.Sprintf("testredis Sentinel (1 sentinel, quorum 1, down-after 1 s), URL redis://sentinel?master_name=mymaster; replication held back, then %d devices disconnect and %d connect, then the master is killed; %v", k, m, cfg),
		fmt.Sprintf("within %v after the failover: the %d online with their own leases, the %d connected during the lag online, the %d that left offline, sessions held = online; live sessions ended 0; a watch resume after the lost last event refused", cfg.bound(), n, m, k))
	st := testredis.StartSentinel(t)
	const prefix, relPrefix, churnPrefix = "sl-", "slR-", "slC-"
	s := startAmbiguous(t, cfg, prefix, n, st.URL())
	rel, relView := s.group(t, "closed before the failover", relPrefix, k)
	seen := map[string]uint64{}
	maxLeases(seen, relView)

	st.DelayReplication(time.Hour)
	rel.finish(t)
	churn, churnView := s.group(t, "connected before the failover", churnPrefix, m)
	maxLeases(seen, churnView)
	// The master acknowledged the Releases: wait until they read offline.
	pollUntil(t, 30*time.Second, 100*time.Millisecond, "the closed devices offline on the master", func() error {
		v, err := readRegistry(s.base(), relPrefix)
		if err != nil {
			return err
		}
		if len(v.online) != 0 {
			return fmt.Errorf("%d still online", len(v.online))
		}
		return nil
	})
	lostID := lastEventID(t, st.Master.Client())
	lostBytes := st.KillMaster()
	killed := time.Now()
	if err := st.WaitFailover(60 * time.Second); err != nil {
		t.Fatalf("%v\nsentinel log:\n%s", err, lastLines(st.Log(), 30))
	}
	failedOver := time.Now()
	phantoms := countPhantoms(t, st.Replica.Client(), relPrefix, k, s.srvs[0].node)
	watch := resumeAfterLost(t, s.base(), st.Replica.Client(), lostID)
	row.add("%d replication bytes lost with the master; failover %s after the kill; the new master named the replica for %d of the %d that left (phantoms); %s",
		lostBytes, fmtSecs(failedOver.Sub(killed)), phantoms, k, watch)
	exactAt, _ := s.exact(t, cfg.bound(), []string{relPrefix}, map[string]int{churnPrefix: m})
	row.add("%s", s.outcomes(t))
	stayed := s.checkStayedUp(t)
	if rep := churn.finish(t); sumCounts(rep.ClosedByReason) != 0 || sumCounts(rep.StreamErrorsByCode) != 0 {
		t.Errorf("the %d devices connected during the lag: %d closed %v, %d broken", m, sumCounts(rep.ClosedByReason), rep.ClosedByReason, sumCounts(rep.StreamErrorsByCode))
	}
	lower := s.comeBack(t, relPrefix, k, seen)
	row.add("registry exact %s after the failover; %s; returning devices with a lease not above the last seen: %d of %d",
		fmtSecs(exactAt.Sub(failedOver)), stayed, lower, k)
}
