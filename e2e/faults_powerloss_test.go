package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/blackhole"
	"github.com/tetherhq/tether/internal/testredis"
)

// problems collects assertion failures about many devices and reports the
// count and the first few, instead of one line per device.
type problems struct {
	n     int
	first []string
}

func (p *problems) add(format string, a ...any) {
	p.n++
	if len(p.first) < 10 {
		p.first = append(p.first, fmt.Sprintf(format, a...))
	}
}

func (p *problems) report(t *testing.T, what string) {
	t.Helper()
	if p.n > 0 {
		t.Errorf("%s: %d problems, the first:\n  %s", what, p.n, strings.Join(p.first, "\n  "))
	}
}

// TestFaultPowerLoss: N devices (half of them legacy agents that never
// answer Pings) connected through a blackhole proxy lose power at once: the
// load generator is frozen and every connection is cut without FIN or RST.
// Every device must read offline within ping-interval + ping-timeout, with
// PING_TIMEOUT (app-pong) or KEEPALIVE_TIMEOUT (legacy) recorded for the
// lease it had.
func TestFaultPowerLoss(t *testing.T) {
	n := bySize(1000, 100)
	lv := faultLiveness()
	row := newFaultRow(t, fmt.Sprintf("1a. Power loss, %d devices through a blackhole proxy, half legacy", n),
		fmt.Sprintf("SIGSTOP tether-loadgen + blackhole Cut() of every connection (no FIN/RST); %v", lv),
		fmt.Sprintf("all offline within ping-interval+ping-timeout = %v (+%v grace) by the server's end time; reason PING_TIMEOUT (app-pong) / KEEPALIVE_TIMEOUT (legacy) for the device's own lease; 0 online in the API, 0 sessions held", lv.bound(), lv.grace()))
	rd := testredis.Start(t)
	srv := startReplica(t, "pl", rd.URL(), "", lv)
	proxy, err := blackhole.NewProxy(srv.grpc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	const prefix = "pl-"
	lg := startLoadgen(t, "tether-loadgen", "--server", proxy.Addr(), "--devices", strconv.Itoa(n), "--id-prefix", prefix, "--legacy-fraction", "0.5")
	before := waitAllOnline(t, srv.base(), prefix, n, 60*time.Second)
	legacy := 0
	for _, d := range before.online {
		if d.Session.LivenessMode == "LIVENESS_MODE_TRANSPORT_ONLY" {
			legacy++
		}
	}
	if legacy != n/2 {
		t.Fatalf("%d legacy (transport-only) sessions, want %d", legacy, n/2)
	}

	cut := time.Now()
	lg.signal(syscall.SIGSTOP)
	proxy.Cut()
	var after regView
	allOff := pollUntil(t, lv.bound()+lv.grace()+15*time.Second, 200*time.Millisecond, "every device offline after the power loss", func() error {
		var err error
		if after, err = readRegistry(srv.base(), prefix); err != nil {
			return err
		}
		if len(after.online) > 0 {
			return fmt.Errorf("%d of %d still online", len(after.online), n)
		}
		return nil
	})
	var pong, keep durations
	var bad problems
	for id, old := range before.online {
		d, ok := after.all[id]
		if !ok || d.Online || d.LastDisconnect == nil {
			bad.add("%s: %+v after the power loss", id, d)
			continue
		}
		want, set := "PING_TIMEOUT", &pong
		if old.Session.LivenessMode == "LIVENESS_MODE_TRANSPORT_ONLY" {
			want, set = "KEEPALIVE_TIMEOUT", &keep
		}
		if d.lastReason() != want || d.lastLease() != old.lease() {
			bad.add("%s (%s): last disconnect %s lease %d, want %s lease %d", id, old.Session.LivenessMode, d.lastReason(), d.lastLease(), want, old.lease())
			continue
		}
		det := d.LastDisconnect.Time.Sub(cut)
		if det > lv.bound()+lv.grace() {
			bad.add("%s (%s): detected %v after the cut, bound %v (+%v)", id, want, det, lv.bound(), lv.grace())
		}
		*set = append(*set, det)
	}
	bad.report(t, "after the power loss")
	if s := srv.sessions(t); s != 0 {
		t.Errorf("the server still holds %d sessions", s)
	}
	row.add("detection (server end time − cut): app-pong %s (n=%d), legacy %s (n=%d) against the bound %v (+%v grace); all %d read offline in the API %s after the cut; wrong reasons/leases %d; stale online 0; sessions held 0",
		pong, len(pong), keep, len(keep), lv.bound(), lv.grace(), n, fmtSecs(allOff.Sub(cut)), bad.n)
}

// TestFaultPowerLossNetns: a real tether-agent in its own network namespace
// (veth pair, link-local /30 created for the test) loses its link; the
// device reads offline within the bound. Then the "device reboots": the
// namespace is deleted and recreated with the same address and a new agent
// starts; it is online again with a higher lease, and the previous end is
// marked SAME_BOOT — a namespace shares the host's kernel and so its boot
// id, which the agent reports (a real reboot would say RESTARTED).
func TestFaultPowerLossNetns(t *testing.T) {
	lv := faultLiveness()
	row := newFaultRow(t, "1b. Power loss of a real tether-agent in a network namespace",
		fmt.Sprintf("`ip link set <veth> down` inside the agent's namespace; then delete + recreate the namespace (same address) and start a new agent; %v", lv),
		fmt.Sprintf("offline within %v (+%v) with PING_TIMEOUT for its lease; after the \"reboot\" online with a higher lease, previous end restart = SAME_BOOT (namespace shares the host boot id)", lv.bound(), lv.grace()))
	if os.Geteuid() != 0 {
		row.skipTest(t, "needs root to create a network namespace and a veth pair")
	}
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		row.skipTest(t, "the ip command (iproute2) is not installed")
	}
	pid := os.Getpid()
	ns := fmt.Sprintf("tetherflt%d", pid)
	hostIf, nsIf := fmt.Sprintf("tfh%d", pid), fmt.Sprintf("tfn%d", pid)
	ipCmd := func(args ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, ipPath, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	cleanup := func() {
		_ = ipCmd("netns", "del", ns) // destroys the veth end inside, and with it the pair
		_ = ipCmd("link", "del", hostIf)
	}
	cleanup()
	t.Cleanup(cleanup)
	defer cleanup()
	hostIP, nsIP, err := freeLinkLocal30(pid)
	if err != nil {
		row.skipTest(t, err.Error())
	}
	makeNS := func() error {
		for _, args := range [][]string{
			{"netns", "add", ns},
			{"link", "add", hostIf, "type", "veth", "peer", "name", nsIf},
			{"link", "set", nsIf, "netns", ns},
			{"addr", "add", hostIP + "/30", "dev", hostIf},
			{"link", "set", hostIf, "up"},
			{"-n", ns, "addr", "add", nsIP + "/30", "dev", nsIf},
			{"-n", ns, "link", "set", nsIf, "up"},
			{"-n", ns, "link", "set", "lo", "up"},
		} {
			if err := ipCmd(args...); err != nil {
				return err
			}
		}
		return nil
	}
	if err := makeNS(); err != nil {
		cleanup()
		row.skipTest(t, "cannot create a network namespace with a veth pair here: "+err.Error())
	}
	l, err := net.Listen("tcp", hostIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	listen := l.Addr().String()
	l.Close()
	rd := testredis.Start(t)
	// Not a loopback address: plaintext needs --insecure (test only).
	srv := startReplica(t, "ns", rd.URL(), listen, lv, "--insecure")
	const id = "netns-dev"
	startAgent := func() *proc {
		return launchProc(t, "tether-agent in "+ns, nil, ipPath, "netns", "exec", ns,
			filepath.Join(binDir, "tether-agent"), "--server", listen, "--device-id", id, "--config", writeAgentConfig(t, ""))
	}
	online := func(what string, limit time.Duration) device {
		var d device
		pollUntil(t, limit, 100*time.Millisecond, what, func() error {
			reg, err := readRegistry(srv.base(), id)
			if err != nil {
				return err
			}
			if d = reg.all[id]; !d.Online || len(reg.online) != 1 {
				return fmt.Errorf("%s offline (%d online)", id, len(reg.online))
			}
			return nil
		})
		return d
	}
	agent := startAgent()
	first := online("the namespaced agent online", 30*time.Second)
	if first.Session.RemoteAddress == "" || !strings.HasPrefix(first.Session.RemoteAddress, nsIP+":") {
		t.Fatalf("session remote %q, want the namespace's %s", first.Session.RemoteAddress, nsIP)
	}

	down := time.Now()
	if err := ipCmd("-n", ns, "link", "set", nsIf, "down"); err != nil {
		t.Fatal(err)
	}
	var d device
	offAt := pollUntil(t, lv.bound()+lv.grace()+10*time.Second, 100*time.Millisecond, "offline after the link went down", func() error {
		var err error
		if d, err = getFDevice(srv.base(), id); err != nil {
			return err
		}
		if d.Online {
			return fmt.Errorf("still online")
		}
		return nil
	})
	if d.lastReason() != "PING_TIMEOUT" || d.lastLease() != first.lease() {
		t.Fatalf("last disconnect %+v, want PING_TIMEOUT of lease %d", d.LastDisconnect, first.lease())
	}
	det := d.LastDisconnect.Time.Sub(down)
	if det > lv.bound()+lv.grace() {
		t.Errorf("detected %v after the link went down, bound %v (+%v)", det, lv.bound(), lv.grace())
	}
	row.add("link down → offline (server end time) %s, in the API %s; reason PING_TIMEOUT", fmtSecs(det), fmtSecs(offAt.Sub(down)))

	// Reboot: the device loses its process and its network stack, then
	// comes back with the same address.
	agent.signal(syscall.SIGKILL)
	agent.wait(t, 10*time.Second)
	cleanup()
	if err := makeNS(); err != nil {
		t.Fatalf("recreating the namespace: %v", err)
	}
	booted := time.Now()
	startAgent()
	second := online("the agent online again after the reboot", 30*time.Second)
	if second.lease() <= first.lease() {
		t.Errorf("lease after the reboot %d, want above %d", second.lease(), first.lease())
	}
	if second.lastLease() != first.lease() || second.lastReason() != "PING_TIMEOUT" || second.lastRestart() != "SAME_BOOT" {
		t.Errorf("last disconnect after the reboot %+v, want PING_TIMEOUT of lease %d with restart SAME_BOOT", second.LastDisconnect, first.lease())
	}
	row.add("back online %s after the new agent started, lease %d > %d; previous end PING_TIMEOUT, restart %s (host boot id shared by the namespace)",
		fmtSecs(time.Since(booted)), second.lease(), first.lease(), second.lastRestart())
}

// freeLinkLocal30 picks a /30 in 169.254.77.0/24 that no interface uses
// (derived from pid, so that two test processes do not collide) and returns
// its two host addresses.
func freeLinkLocal30(pid int) (host, peer string, err error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", "", err
	}
	used := func(base int) bool {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip4 := ipn.IP.To4(); ip4 != nil && ip4[0] == 169 && ip4[1] == 254 && ip4[2] == 77 && int(ip4[3])/4 == base/4 {
					return true
				}
			}
		}
		return false
	}
	for i := range 63 {
		base := ((pid+i)%63)*4 + 4 // 4 … 252: never the .0/30
		if !used(base) {
			return fmt.Sprintf("169.254.77.%d", base+1), fmt.Sprintf("169.254.77.%d", base+2), nil
		}
	}
	return "", "", fmt.Errorf("no free /30 in 169.254.77.0/24")
}

func getFDevice(base, id string) (device, error) {
	var resp struct {
		Device device `json:"device"`
	}
	err := getJSON(base+"/v1/devices/"+id, &resp)
	return resp.Device, err
}

// TestFaultAgentFrozen: N devices connected directly; the load generator is
// frozen (SIGSTOP: its sockets stay open, the kernel still ACKs, nothing is
// answered). All must read offline within the bound; after SIGCONT all come
// back with higher leases, exactly N online.
func TestFaultAgentFrozen(t *testing.T) {
	n := bySize(1000, 100)
	lv := faultLiveness()
	row := newFaultRow(t, fmt.Sprintf("2. Agent frozen, %d devices", n),
		fmt.Sprintf("SIGSTOP tether-loadgen (connections stay open), later SIGCONT; %v", lv),
		fmt.Sprintf("all offline within %v (+%v), PING_TIMEOUT of their lease; after SIGCONT exactly %d online, each with a higher lease, previous end restart SAME_BOOT (same process), sessions held = online", lv.bound(), lv.grace(), n))
	rd := testredis.Start(t)
	srv := startReplica(t, "fz", rd.URL(), "", lv)
	const prefix = "fz-"
	lg := startLoadgen(t, "tether-loadgen", "--server", srv.grpc, "--devices", strconv.Itoa(n), "--id-prefix", prefix)
	before := waitAllOnline(t, srv.base(), prefix, n, 60*time.Second)

	frozen := time.Now()
	lg.signal(syscall.SIGSTOP)
	var after regView
	allOff := pollUntil(t, lv.bound()+lv.grace()+15*time.Second, 200*time.Millisecond, "every device offline while frozen", func() error {
		var err error
		if after, err = readRegistry(srv.base(), prefix); err != nil {
			return err
		}
		if len(after.online) > 0 {
			return fmt.Errorf("%d of %d still online", len(after.online), n)
		}
		return nil
	})
	var det durations
	var bad problems
	for id, old := range before.online {
		d := after.all[id]
		if d.Online || d.lastReason() != "PING_TIMEOUT" || d.lastLease() != old.lease() {
			bad.add("%s: online=%v last %s lease %d, want PING_TIMEOUT lease %d", id, d.Online, d.lastReason(), d.lastLease(), old.lease())
			continue
		}
		x := d.LastDisconnect.Time.Sub(frozen)
		if x > lv.bound()+lv.grace() {
			bad.add("%s: detected %v after SIGSTOP, bound %v (+%v)", id, x, lv.bound(), lv.grace())
		}
		det = append(det, x)
	}
	bad.report(t, "while frozen")

	thawed := time.Now()
	lg.signal(syscall.SIGCONT)
	back := waitAllOnline(t, srv.base(), prefix, n, 60*time.Second)
	backAt := time.Now()
	bad = problems{}
	for id, old := range before.online {
		d := back.all[id]
		if d.lease() <= old.lease() || d.lastLease() != old.lease() || d.lastReason() != "PING_TIMEOUT" || d.lastRestart() != "SAME_BOOT" {
			bad.add("%s: lease %d (was %d), last %s lease %d restart %s", id, d.lease(), old.lease(), d.lastReason(), d.lastLease(), d.lastRestart())
		}
	}
	bad.report(t, "after SIGCONT")
	if s := srv.sessions(t); s != n {
		t.Errorf("the server holds %d sessions, %d online", s, n)
	}
	row.add("detection %s (n=%d, bound %v), all offline in the API %s after SIGSTOP; after SIGCONT all %d back online in %s with higher leases; sessions held %d = online %d; wrong records: %d",
		det, len(det), lv.bound(), fmtSecs(allOff.Sub(frozen)), n, fmtSecs(backAt.Sub(thawed)), n, len(back.online), bad.n)
}

// TestFaultRebootStorm: N devices lose power behind a blackhole proxy
// (their connections linger, silent) and all reboot at once: a second load
// generator with the same ids connects directly. Every device must be online
// with a lease above its old one while the old connections still linger;
// once the old ones are detected dead nothing changes: exactly N online,
// each with its new lease, the old lease recorded as REPLACED.
func TestFaultRebootStorm(t *testing.T) {
	n := bySize(1000, 200)
	lv := faultLiveness()
	if !faultsFull() {
		// A bound long enough that the whole storm lands before the old
		// sessions could be detected dead, still short.
		lv.interval, lv.timeout = 6*time.Second, 3*time.Second
	}
	ramp := bySize(500, 400)
	row := newFaultRow(t, fmt.Sprintf("3. Reboot storm, %d devices", n),
		fmt.Sprintf("blackhole Cut() of %d connections + SIGSTOP of their loadgen; a second loadgen, same ids, new boot id, connects directly at %d/s; %v", n, ramp, lv),
		fmt.Sprintf("every device online with a lease above its old one while the old connections linger; after bound + 2 s still exactly %d online with the new leases, old lease ended REPLACED (restart RESTARTED), takeovers = %d, sessions held = %d", n, n, n))
	rd := testredis.Start(t)
	srv := startReplica(t, "rs", rd.URL(), "", lv)
	proxy, err := blackhole.NewProxy(srv.grpc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	const prefix = "rs-"
	lg1 := startLoadgen(t, "tether-loadgen #1", "--server", proxy.Addr(), "--devices", strconv.Itoa(n), "--id-prefix", prefix)
	before := waitAllOnline(t, srv.base(), prefix, n, 60*time.Second)
	takeovers0 := srv.metric(t, "tether_takeovers_total")

	cut := time.Now()
	lg1.signal(syscall.SIGSTOP)
	proxy.Cut()
	startLoadgen(t, "tether-loadgen #2", "--server", srv.grpc, "--devices", strconv.Itoa(n), "--id-prefix", prefix, "--ramp", fmt.Sprintf("%d/s", ramp))
	var storm regView
	allNew := pollUntil(t, lv.bound()+30*time.Second, 100*time.Millisecond, "every device online with a new lease", func() error {
		var err error
		if storm, err = readRegistry(srv.base(), prefix); err != nil {
			return err
		}
		newer := 0
		for id, old := range before.online {
			if d := storm.all[id]; d.Online && d.lease() > old.lease() {
				newer++
			}
		}
		if newer != n || len(storm.online) != n {
			return fmt.Errorf("%d of %d online with a new lease (%d online)", newer, n, len(storm.online))
		}
		return nil
	})
	stormTook := allNew.Sub(cut)
	// The old sessions cannot have been detected before ping-timeout after
	// the cut; every takeover landing before that is checked below through
	// the recorded reason (REPLACED, not PING_TIMEOUT).
	t.Logf("all %d devices online with new leases %v after the cut (detection bound %v)", n, stormTook, lv.bound())

	time.Sleep(time.Until(cut.Add(lv.bound() + 2*time.Second)))
	final, err := readRegistry(srv.base(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := final.consistent(); err != nil {
		t.Error(err)
	}
	if len(final.online) != n {
		t.Errorf("%d online after the old connections were detected dead, want %d", len(final.online), n)
	}
	var bad problems
	replaced := 0
	for id, old := range before.online {
		d, s := final.all[id], storm.all[id]
		switch {
		case !d.Online || d.lease() != s.lease():
			bad.add("%s: online=%v lease %d, want the storm's lease %d", id, d.Online, d.lease(), s.lease())
		case d.lastLease() != old.lease() || d.lastReason() != "REPLACED":
			bad.add("%s: last disconnect %s of lease %d, want REPLACED of the old lease %d", id, d.lastReason(), d.lastLease(), old.lease())
		case d.lastRestart() != "RESTARTED":
			bad.add("%s: restart %s, want RESTARTED (the second loadgen has another boot id)", id, d.lastRestart())
		default:
			replaced++
		}
	}
	bad.report(t, "after the old connections were detected dead")
	takeovers := srv.metric(t, "tether_takeovers_total") - takeovers0
	if int(takeovers) != n {
		t.Errorf("tether_takeovers_total grew by %v, want %d", takeovers, n)
	}
	stale := srv.metric(t, "tether_registry_stale_writes_total")
	if s := srv.sessions(t); s != n {
		t.Errorf("the server holds %d sessions, want %d", s, n)
	}
	row.add("all %d online with higher leases %s after the cut (old connections still open; earliest possible detection %v); after %s: %d online, %d/%d old leases ended REPLACED (restart RESTARTED); takeovers %d; fenced (refused) stale writes %v; sessions lost 0",
		n, fmtSecs(stormTook), lv.timeout, fmtSecs(lv.bound()+2*time.Second), len(final.online), replaced, n, int(takeovers), stale)
}
