package testredis

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of masters without replicas, each a Server
// started with --cluster-enabled yes on free loopback ports (its cluster bus
// on another free port), the slots split evenly by
// `redis-cli --cluster create … --cluster-yes`. Its nodes.conf lives in the
// node's directory and survives Restart, so a restarted master comes back
// empty but owning the same slots (a master without persistence that
// rebooted).
type Cluster struct {
	tb    testing.TB
	Nodes []*Server
}

// clusterNodeTimeout is cluster-node-timeout: longer than a Restart takes,
// so a restarted master is never marked failed.
const clusterNodeTimeout = 5 * time.Second

// StartCluster starts a cluster of n ≥ 3 masters for tb. It fails tb when
// redis-server or redis-cli is missing.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	if n < 3 {
		tb.Fatalf("testredis: a cluster needs at least 3 masters, not %d", n)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		tb.Fatalf("testredis: redis-cli is not in PATH (%v); it comes with redis-server (make deps)", err)
	}
	c := &Cluster{tb: tb}
	addrs := make([]string, n)
	for i := range n {
		bus, err := freePort()
		if err != nil {
			tb.Fatalf("testredis: %v", err)
		}
		c.Nodes = append(c.Nodes, StartWith(tb, Options{Args: []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.FormatInt(clusterNodeTimeout.Milliseconds(), 10),
			"--cluster-port", strconv.Itoa(bus),
		}}))
		addrs[i] = c.Nodes[i].Addr()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append(append([]string{"--cluster", "create"}, addrs...), "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		tb.Fatalf("testredis: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if err := c.WaitOK(30 * time.Second); err != nil {
		tb.Fatalf("testredis: %v", err)
	}
	return c
}

// URL is the cluster URL with every master as a seed:
// redis://h1:p1?addr=h2:p2&addr=h3:p3.
func (c *Cluster) URL() string {
	u := "redis://" + c.Nodes[0].Addr()
	for i, s := range c.Nodes[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + s.Addr()
	}
	return u
}

// SeedURL is the cluster URL with one seed: redis://h1:p1?cluster=true.
func (c *Cluster) SeedURL() string { return "redis://" + c.Nodes[0].Addr() + "?cluster=true" }

// Client returns a cluster client (context deadlines honoured), closed when
// the test ends.
func (c *Cluster) Client() *redis.ClusterClient {
	addrs := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		addrs[i] = s.Addr()
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, ContextTimeoutEnabled: true})
	c.tb.Cleanup(func() { cc.Close() })
	return cc
}

// NodeOf returns the index in Nodes of the master serving key's slot.
func (c *Cluster) NodeOf(key string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a := c.Nodes[0].admin()
	defer a.Close()
	slot, err := a.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		return 0, err
	}
	slots, err := a.ClusterSlots(ctx).Result()
	if err != nil {
		return 0, err
	}
	for _, r := range slots {
		if int64(r.Start) <= slot && slot <= int64(r.End) && len(r.Nodes) > 0 {
			for i, s := range c.Nodes {
				if sameAddr(r.Nodes[0].Addr, s.Addr()) {
					return i, nil
				}
			}
			return 0, fmt.Errorf("slot %d is served by %s, not a node of this cluster", slot, r.Nodes[0].Addr)
		}
	}
	return 0, fmt.Errorf("slot %d is not served", slot)
}

func sameAddr(a, b string) bool {
	ha, pa, _ := net.SplitHostPort(a)
	hb, pb, _ := net.SplitHostPort(b)
	norm := func(h string) string {
		if h == "" || h == "localhost" {
			return "127.0.0.1"
		}
		return h
	}
	return pa == pb && norm(ha) == norm(hb)
}

// RestartEmpty kills master i and starts it again on the same ports with
// the same nodes.conf and no data, then waits until every node reports
// cluster_state:ok.
func (c *Cluster) RestartEmpty(i int) {
	c.tb.Helper()
	c.Nodes[i].Restart()
	if err := c.WaitOK(30 * time.Second); err != nil {
		c.tb.Fatalf("testredis: after restarting master %d: %v", i, err)
	}
}

// WaitOK waits until every node answers CLUSTER INFO with cluster_state:ok
// and agrees on the slot map of all 16384 slots.
func (c *Cluster) WaitOK(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		err := c.ok()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster not ok within %v: %w", limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *Cluster) ok() error {
	for i, s := range c.Nodes {
		a := s.admin()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := a.ClusterInfo(ctx).Result()
		var slots []redis.ClusterSlot
		if err == nil {
			slots, err = a.ClusterSlots(ctx).Result()
		}
		cancel()
		a.Close()
		if err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("node %d: not cluster_state:ok", i)
		}
		covered := 0
		for _, r := range slots {
			covered += r.End - r.Start + 1
		}
		if covered != 16384 {
			return fmt.Errorf("node %d knows %d of 16384 slots", i, covered)
		}
	}
	return nil
}
