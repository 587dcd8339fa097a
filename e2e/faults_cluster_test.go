package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/blackhole"
	"github.com/tetherhq/tether/internal/testredis"
)

// TestFaultReplicaKill9: two replicas share Redis, N sessions spread over
// both. Replica a's machine loses power: its process is killed (SIGKILL)
// and its network goes silent (a blackhole proxy in front of it is cut, so
// its agents get no FIN/RST and keep their dead connections until their own
// keepalive gives up). Within --lease-ttl (+1 s) no device reads online on
// a (asked on replica b); once the agents have moved over, exactly N are
// online, all on b, the ones from a with higher leases, b's untouched.
func TestFaultReplicaKill9(t *testing.T) {
	n := bySize(5000, 500)
	lv := faultLiveness()
	reconnect := bySize("the agents' own keepalive (20 s + 5 s) ends the dead connections", "the dead connections are then closed (proxy closed) to move the agents over quickly")
	row := newFaultRow(t, fmt.Sprintf("4. Replica kill -9, %d sessions over 2 replicas", n),
		fmt.Sprintf("SIGKILL replica a + blackhole Cut() of its agents' connections (power loss of a's machine); %s; %v", reconnect, lv),
		fmt.Sprintf("within lease TTL %v (+1 s) no device online on a (read on b), a's devices NODE_LOST for their lease; then exactly %d online, all on b, a's with higher leases (previous end NODE_LOST), b's leases unchanged; sessions held on b = %d", lv.leaseTTL, n, n))
	rd := testredis.Start(t)
	a := startReplica(t, "a", rd.URL(), "", lv)
	b := startReplica(t, "b", rd.URL(), "", lv)
	proxyA, err := blackhole.NewProxy(a.grpc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxyA.Close() })
	const prefix = "k9-"
	args := []string{"--server", proxyA.Addr() + "," + b.grpc, "--devices", strconv.Itoa(n), "--id-prefix", prefix}
	if faultsFull() {
		args = append(args, "--source-ips", "127.0.0.2-127.0.0.61")
	}
	startLoadgen(t, "tether-loadgen", args...)
	before := waitAllOnline(t, b.base(), prefix, n, 120*time.Second)
	onA := before.onlineOn("a")
	if onA == 0 || onA == n {
		t.Fatalf("%d of %d sessions on replica a; want them spread", onA, n)
	}

	proxyA.Cut()
	killed := time.Now()
	a.p.signal(syscall.SIGKILL)
	lostAt := pollUntil(t, lv.leaseTTL+15*time.Second, 100*time.Millisecond, "no device online on the killed replica", func() error {
		on, err := listDevices(b.base(), true)
		if err != nil {
			return err
		}
		k := 0
		for _, d := range on {
			if strings.HasPrefix(d.DeviceID, prefix) && d.node() == "a" {
				k++
			}
		}
		if k > 0 {
			return fmt.Errorf("%d devices still online on a %v after the kill", k, time.Since(killed).Round(time.Millisecond))
		}
		return nil
	})
	lostTook := lostAt.Sub(killed)
	if lostTook > lv.leaseTTL+time.Second {
		t.Errorf("devices of the killed replica read online for %v, want at most the lease TTL %v + 1s", lostTook, lv.leaseTTL)
	}
	mid, err := readRegistry(b.base(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	var bad problems
	nodeLost, early := 0, 0
	for id, old := range before.online {
		d := mid.all[id]
		if old.node() == "a" {
			// Their agents are stuck on the dead connections until their
			// keepalive gives up, 20 s + 5 s after the last byte from a:
			// in full mode that can be just after the lease TTL, so a
			// device may already be back, on b.
			switch {
			case d.lastReason() != "NODE_LOST" || d.lastLease() != old.lease() || d.LastDisconnect.Node != "a":
				bad.add("%s (was on a, lease %d): online=%v last %s lease %d", id, old.lease(), d.Online, d.lastReason(), d.lastLease())
			case !d.Online:
				nodeLost++
			case d.node() == "b" && d.lease() > old.lease():
				early++
			default:
				bad.add("%s (was on a, lease %d): online on %s with lease %d", id, old.lease(), d.node(), d.lease())
			}
		} else if !d.Online || d.lease() != old.lease() || d.node() != "b" {
			bad.add("%s (on b, lease %d): online=%v node %s lease %d", id, old.lease(), d.Online, d.node(), d.lease())
		}
	}
	bad.report(t, "after the lease TTL")

	moved := time.Now()
	if !faultsFull() {
		proxyA.Close()
	}
	var final regView
	doneAt := pollUntil(t, 120*time.Second, 250*time.Millisecond, "every device online on b", func() error {
		var err error
		if final, err = readRegistry(b.base(), prefix); err != nil {
			return err
		}
		if k := final.onlineOn("b"); k != n || len(final.online) != n {
			return fmt.Errorf("%d online, %d of them on b, want %d", len(final.online), k, n)
		}
		return final.consistent()
	})
	bad = problems{}
	for id, old := range before.online {
		d := final.all[id]
		switch {
		case old.node() == "b" && d.lease() != old.lease():
			bad.add("%s: stayed on b but its lease changed %d → %d", id, old.lease(), d.lease())
		case old.node() == "a" && (d.lease() <= old.lease() || d.lastLease() != old.lease() || d.lastReason() != "NODE_LOST" || d.lastRestart() != "SAME_BOOT"):
			bad.add("%s: was on a with lease %d; now lease %d, last %s lease %d restart %s", id, old.lease(), d.lease(), d.lastReason(), d.lastLease(), d.lastRestart())
		}
	}
	bad.report(t, "after the agents moved to b")
	if s := b.sessions(t); s != n {
		t.Errorf("replica b holds %d sessions, %d devices read online", s, n)
	}
	movedBy := fmt.Sprintf("%s after SIGKILL (the agents' keepalive ended the dead connections)", fmtSecs(doneAt.Sub(killed)))
	if !faultsFull() {
		movedBy = fmt.Sprintf("%s after the dead connections were closed", fmtSecs(doneAt.Sub(moved)))
	}
	row.add("%d/%d sessions were on a; none online on a %s after SIGKILL (TTL %v), %d read NODE_LOST for their own lease (%d already back on b); all %d online on b %s, a's with higher leases (previous end NODE_LOST, SAME_BOOT), b's %d unchanged; stale online 0; sessions held on b %d; sessions lost 0; wrong records %d",
		onA, n, fmtSecs(lostTook), lv.leaseTTL, nodeLost+early, early, n, movedBy, n-onA, n, bad.n)
}

// TestFaultDrainUnderLoad: N sessions all on replica a (a load balancer
// sends new connections to the first replica that accepts); SIGTERM a. It
// must exit 0 within its drain timeout, and all N devices be online on b,
// none on a, none lost.
func TestFaultDrainUnderLoad(t *testing.T) {
	n := bySize(2000, 300)
	lv := faultLiveness()
	const drainTimeout = 10 * time.Second
	row := newFaultRow(t, fmt.Sprintf("6. SIGTERM drain under load, %d sessions", n),
		fmt.Sprintf("SIGTERM replica a holding all %d sessions (failover proxy a→b in front); %v", n, lv),
		fmt.Sprintf("a exits 0 within --drain-timeout %v; exactly %d online, all on b, each with a higher lease and its previous session ended DRAINING on a; none on a; sessions lost 0", drainTimeout, n))
	rd := testredis.Start(t)
	a := startReplica(t, "a", rd.URL(), "", lv, "--drain-timeout", drainTimeout.String())
	b := startReplica(t, "b", rd.URL(), "", lv)
	lb, err := newFailoverProxy(a.grpc, b.grpc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lb.Close() })
	const prefix = "dr-"
	lg := startLoadgen(t, "tether-loadgen", "--server", lb.Addr(), "--devices", strconv.Itoa(n), "--id-prefix", prefix)
	before := waitAllOnline(t, b.base(), prefix, n, 120*time.Second)
	if k := before.onlineOn("a"); k != n {
		t.Fatalf("%d of %d on a before the drain", k, n)
	}

	term := time.Now()
	a.p.signal(syscall.SIGTERM)
	if err := a.p.wait(t, drainTimeout+20*time.Second); err != nil {
		t.Errorf("replica a exited with %v, want 0", err)
	}
	exitTook := time.Since(term)
	if exitTook > drainTimeout+time.Second {
		t.Errorf("replica a took %v to exit, drain timeout %v", exitTook, drainTimeout)
	}
	var final regView
	doneAt := pollUntil(t, 120*time.Second, 250*time.Millisecond, "every device online on b", func() error {
		var err error
		if final, err = readRegistry(b.base(), prefix); err != nil {
			return err
		}
		if k := final.onlineOn("b"); k != n || len(final.online) != n {
			return fmt.Errorf("%d online, %d of them on b, want %d", len(final.online), k, n)
		}
		return final.consistent()
	})
	var bad problems
	for id, old := range before.online {
		d := final.all[id]
		if d.lease() <= old.lease() || d.lastLease() != old.lease() || d.lastReason() != "DRAINING" || d.LastDisconnect.Node != "a" {
			bad.add("%s: lease %d (was %d on a), last %s lease %d", id, d.lease(), old.lease(), d.lastReason(), d.lastLease())
		}
	}
	bad.report(t, "after the drain")
	if s := b.sessions(t); s != n {
		t.Errorf("replica b holds %d sessions, want %d", s, n)
	}
	if k := lb.active(a.grpc); k != 0 {
		t.Errorf("%d connections still on a", k)
	}
	rep := lg.finish(t)
	if got := rep.ClosedByReason["DRAINING"]; got != int64(n) {
		t.Errorf("the load generator saw %d DRAINING closes, want %d (%v)", got, n, rep.ClosedByReason)
	}
	row.add("a exited 0 in %s; all %d online on b %s after SIGTERM (0 on a, 0 lost, 0 stale); loadgen saw %d DRAINING closes, %d broken streams, %d failed reconnects %v; wrong records %d",
		fmtSecs(exitTook), n, fmtSecs(doneAt.Sub(term)), rep.ClosedByReason["DRAINING"], sumCounts(rep.StreamErrorsByCode), rep.ConnectFailures, rep.ConnectFailuresByCode, bad.n)
}

// TestFaultDuplicateDeviceID: two real agents configured with the same
// device id keep taking the session from each other. Neither may crash-loop,
// the takeovers must stay bounded: the server's flapping guard
// (--flap-limit takeovers per minute) puts the id in a cooldown and refuses
// the loser with Close(FLAPPING, retry_after) while the winner stays online.
func TestFaultDuplicateDeviceID(t *testing.T) {
	dur := bySize(60*time.Second, 20*time.Second)
	flapLimit := bySize(10, 3) // 10 is the server default
	lv := faultLiveness()
	row := newFaultRow(t, "7. Duplicate device ids: two real tether-agents, one id",
		fmt.Sprintf("two tether-agent processes with the same --device-id for %v; server --flap-limit %d (per minute), cooldown 1 min; %v", dur, flapLimit, lv),
		fmt.Sprintf("both processes still running; takeovers ≤ flap limit + 3 = %d; the flapping guard engages (tether_flapping_total ≥ 1, Close FLAPPING in an agent's log); exactly 1 session online", flapLimit+3))
	rd := testredis.Start(t)
	srv := startReplica(t, "dup", rd.URL(), "", lv, "--flap-limit", strconv.Itoa(flapLimit))
	const id = "dup-1"
	var agents []*proc
	for i := range 2 {
		agents = append(agents, launchProc(t, fmt.Sprintf("tether-agent #%d", i+1), nil, binDir+"/tether-agent",
			"--server", srv.grpc, "--device-id", id, "--config", writeAgentConfig(t, "")))
	}
	began := time.Now()
	var engagedAt time.Duration
	for time.Since(began) < dur {
		time.Sleep(500 * time.Millisecond)
		for _, a := range agents {
			if !a.running() {
				t.Fatalf("%s exited after %v: %v", a.name, time.Since(began).Round(time.Millisecond), a.err)
			}
		}
		if engagedAt == 0 && srv.metric(t, "tether_flapping_total") > 0 {
			engagedAt = time.Since(began)
		}
	}
	takeovers := int(srv.metric(t, "tether_takeovers_total"))
	flapping := int(srv.metric(t, "tether_flapping_total"))
	refused := 0
	for _, a := range agents {
		refused += strings.Count(a.out.String(), "reason=flapping")
	}
	if takeovers > flapLimit+3 {
		t.Errorf("%d takeovers in %v, want at most %d", takeovers, dur, flapLimit+3)
	}
	if flapping < 1 || refused < 1 {
		t.Errorf("the flapping guard did not engage: tether_flapping_total %d, FLAPPING closes in the agents' logs %d", flapping, refused)
	}
	if !strings.Contains(srv.p.out.String(), "device flapping") {
		t.Errorf("the server did not log the flapping device")
	}
	reg, err := readRegistry(srv.base(), id)
	if err != nil {
		t.Fatal(err)
	}
	if d := reg.all[id]; len(reg.online) != 1 || !d.Online {
		t.Errorf("%d online for %s (%+v), want exactly its one session", len(reg.online), id, d)
	}
	if s := srv.sessions(t); s != 1 {
		t.Errorf("the server holds %d sessions, want 1", s)
	}
	rate := float64(takeovers) / dur.Minutes()
	row.add("both agents running after %v; %d takeovers (%.1f/min), guard engaged after %s (tether_flapping_total %d), %d FLAPPING refusals in the agents' logs; 1 online, 1 session held",
		dur, takeovers, rate, fmtSecs(engagedAt), flapping, refused)
}
