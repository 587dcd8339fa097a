package testredis_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/testredis"
)

func TestOOMRefusesWritesKeepsReads(t *testing.T) {
	srv := testredis.Start(t)
	c := srv.Client()
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	srv.OOM()
	if err := c.Set(ctx, "k2", "v", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "OOM") {
		t.Fatalf("SET under OOM: %v, want an OOM error reply", err)
	}
	if err := c.Eval(ctx, "return redis.call('SET', KEYS[1], 'x')", []string{"k3"}).Err(); err == nil || !strings.Contains(err.Error(), "OOM") {
		t.Fatalf("a writing script under OOM: %v, want an OOM error reply", err)
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("GET under OOM: %q, %v", v, err)
	}
	srv.NoOOM()
	if err := c.Set(ctx, "k2", "v", 0).Err(); err != nil {
		t.Fatalf("after NoOOM: %v", err)
	}
}

func TestReadOnlyRefusesWritesKeepsData(t *testing.T) {
	srv := testredis.Start(t)
	c := srv.Client()
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	srv.ReadOnly()
	if err := c.Set(ctx, "k2", "v", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "READONLY") {
		t.Fatalf("SET on a read-only replica: %v, want READONLY", err)
	}
	srv.Writable()
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("after Writable: GET %q, %v; want the data kept", v, err)
	}
	if err := c.Set(ctx, "k2", "v", 0).Err(); err != nil {
		t.Fatalf("after Writable: %v", err)
	}
}

func TestBusyAnswersBusyUntilTheScriptEnds(t *testing.T) {
	srv := testredis.Start(t)
	c := srv.Client()
	wait := srv.Busy(1500*time.Millisecond, 50*time.Millisecond)
	var sawBusy bool
	for range 100 {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err != nil && strings.HasPrefix(err.Error(), "BUSY") {
			sawBusy = true
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if !sawBusy {
		t.Fatal("no BUSY reply while the script ran")
	}
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Fatalf("after the script: %v", err)
	}
}

func TestClusterShardRestartedEmpty(t *testing.T) {
	cl := testredis.StartCluster(t, 3)
	c := cl.Client()
	ctx := t.Context()
	keys := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	for _, k := range keys {
		if err := c.Set(ctx, k, "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	i, err := cl.NodeOf("a")
	if err != nil {
		t.Fatal(err)
	}
	cl.RestartEmpty(i)
	lost, kept := 0, 0
	for _, k := range keys {
		j, err := cl.NodeOf(k)
		if err != nil {
			t.Fatal(err)
		}
		n, err := c.Exists(ctx, k).Result()
		if err != nil {
			t.Fatalf("EXISTS %s after the restart: %v", k, err)
		}
		switch {
		case j == i && n == 0:
			lost++
		case j != i && n == 1:
			kept++
		default:
			t.Errorf("key %s on node %d (restarted %d): exists=%d", k, j, i, n)
		}
	}
	if lost == 0 || kept == 0 {
		t.Errorf("%d keys lost, %d kept; want the restarted shard's keys lost and the others kept", lost, kept)
	}
	if !strings.Contains(cl.URL(), "?addr=") || !strings.HasSuffix(cl.SeedURL(), "?cluster=true") {
		t.Errorf("URLs %q %q", cl.URL(), cl.SeedURL())
	}
}

func TestSentinelFailoverLosesDelayedWrites(t *testing.T) {
	st := testredis.StartSentinel(t)
	m := st.Master.Client()
	ctx := t.Context()
	if err := m.Set(ctx, "early", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r := st.Replica.Client()
	deadline := time.Now().Add(10 * time.Second)
	for r.Exists(ctx, "early").Val() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the early write never reached the replica")
		}
		time.Sleep(20 * time.Millisecond)
	}
	st.DelayReplication(time.Hour)
	if err := m.Set(ctx, "late", "1", 0).Err(); err != nil { // acknowledged by the master
		t.Fatal(err)
	}
	if lost := st.KillMaster(); lost == 0 {
		t.Error("no replication bytes were held when the master was killed")
	}
	if err := st.WaitFailover(30 * time.Second); err != nil {
		t.Fatalf("%v\nsentinel log:\n%s", err, st.Log())
	}
	if n := r.Exists(ctx, "early", "late").Val(); n != 1 {
		t.Fatalf("the new master has %d of early, late; want only early", n)
	}
	if !strings.Contains(st.URL(), "?master_name="+testredis.MasterName) {
		t.Errorf("URL %q", st.URL())
	}
}
