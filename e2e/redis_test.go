package e2e

import (
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/testredis"
)

// cluster is a set of replicas sharing one real redis-server.
type cluster struct {
	redis *testredis.Server
	grpc  []string
	http  []string
	procs []*proc
}

func startCluster(t *testing.T, n int, extra ...string) *cluster {
	t.Helper()
	c := &cluster{redis: testredis.Start(t)}
	for i := 0; i < n; i++ {
		g, h := freeAddr(t), freeAddr(t)
		args := append([]string{"--listen", g, "--http", h, "--node", fmt.Sprintf("r%d", i+1), "--redis", c.redis.URL()}, extra...)
		c.procs = append(c.procs, start(t, "tether-server", args...))
		c.grpc, c.http = append(c.grpc, g), append(c.http, h)
	}
	for i := range c.grpc {
		waitListening(t, c.grpc[i])
		waitListening(t, c.http[i])
	}
	return c
}

func (c *cluster) base(i int) string { return "http://" + c.http[i] }

// TestKillNineReplica: a replica holding sessions is killed with SIGKILL (its
// agents frozen, as if the whole rack lost power). Within the lease TTL no
// device of it reads as online anywhere; when the agents resume they
// reconnect to another replica and are online again with higher leases.
func TestKillNineReplica(t *testing.T) {
	c := startCluster(t, 2, "--lease-ttl", "3s")
	lb, err := newFailoverProxy(c.grpc[0], c.grpc[1])
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	const n = 5
	var agents []*proc
	for i := 0; i < n; i++ {
		agents = append(agents, start(t, "tether-agent", "--server", lb.Addr(), "--device-id", fmt.Sprintf("k9-%d", i), "--config", writeAgentConfig(t, "")))
	}
	before := map[string]uint64{}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("k9-%d", i)
		d := waitOnline(t, c.base(1), id, 20*time.Second)
		if d.Session.Node != "r1" {
			t.Fatalf("%s on %s, want r1", id, d.Session.Node)
		}
		before[id] = d.lease()
	}
	for _, a := range agents {
		a.signal(syscall.SIGSTOP)
	}
	c.procs[0].signal(syscall.SIGKILL)
	killed := time.Now()
	for id := range before {
		eventually(t, 10*time.Second, func() error {
			d, err := getDevice(c.base(1), id)
			if err != nil {
				return err
			}
			if d.Online {
				return fmt.Errorf("%s still online %s after the kill", id, time.Since(killed))
			}
			if d.LastDisconnect == nil || d.LastDisconnect.Reason != "DISCONNECT_REASON_NODE_LOST" {
				return fmt.Errorf("%s last disconnect %+v", id, d.LastDisconnect)
			}
			return nil
		})
	}
	t.Logf("all %d devices offline (NODE_LOST) %v after SIGKILL (lease TTL 3s)", n, time.Since(killed).Round(time.Millisecond))
	// The list never shows them online either.
	var list struct {
		Devices []device `json:"devices"`
	}
	if err := getJSON(c.base(1)+"/v1/devices?presence=PRESENCE_FILTER_ONLINE", &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Devices) != 0 {
		t.Fatalf("online list after the kill: %+v", list.Devices)
	}
	for _, a := range agents {
		a.signal(syscall.SIGCONT)
	}
	for id, old := range before {
		d := waitOnline(t, c.base(1), id, 90*time.Second)
		if d.Session.Node != "r2" || d.lease() <= old {
			t.Fatalf("%s back on %s with lease %d (was %d on r1)", id, d.Session.Node, d.lease(), old)
		}
	}
}

// TestRedisRestartedEmpty: Redis goes away (agents stay connected; reads say
// UNAVAILABLE), then comes back empty; every live session is re-mirrored with
// its own lease within 5 s, none lost, none duplicated.
func TestRedisRestartedEmpty(t *testing.T) {
	c := startCluster(t, 1)
	const n = 6
	leases := map[string]uint64{}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("rr-%d", i)
		start(t, "tether-agent", "--server", c.grpc[0], "--device-id", id, "--config", writeAgentConfig(t, ""))
	}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("rr-%d", i)
		leases[id] = waitOnline(t, c.base(0), id, 20*time.Second).lease()
	}
	c.redis.Stop()
	eventually(t, 10*time.Second, func() error {
		resp, err := http.Get(c.base(0) + "/v1/devices/rr-0")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			return fmt.Errorf("GET during the outage: %s, want 503", resp.Status)
		}
		return nil
	})
	time.Sleep(2 * time.Second) // an outage of a few seconds, streams stay up
	c.redis.Restart()
	back := time.Now()
	eventually(t, 5*time.Second, func() error {
		var list struct {
			Devices []device `json:"devices"`
		}
		if err := getJSON(c.base(0)+"/v1/devices?page_size=100", &list); err != nil {
			return err
		}
		if len(list.Devices) != n {
			return fmt.Errorf("%d devices listed, want %d", len(list.Devices), n)
		}
		for _, d := range list.Devices {
			if !d.Online || d.lease() != leases[d.DeviceID] {
				return fmt.Errorf("%s online=%v lease=%d, want lease %d", d.DeviceID, d.Online, d.lease(), leases[d.DeviceID])
			}
		}
		return nil
	})
	t.Logf("all %d sessions re-mirrored %v after Redis came back empty", n, time.Since(back).Round(time.Millisecond))
}
