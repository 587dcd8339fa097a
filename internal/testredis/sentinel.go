package testredis

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tetherhq/tether/internal/lostreply"
)

// MasterName is the name the Sentinel setup monitors.
const MasterName = "mymaster"

// Sentinel is a master, one replica and one Sentinel (quorum 1,
// down-after-milliseconds 1000), all on free loopback ports. The replica
// does not connect to the master directly: its replication stream goes
// through a lostreply proxy, which can hold the master's stream back for a
// while. Killing the master then loses the writes it acknowledged in that
// window, as an asynchronous replica that lagged loses them in production.
type Sentinel struct {
	tb      testing.TB
	Master  *Server
	Replica *Server
	feed    *lostreply.Proxy
	port    int
	dir     string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// sentinelFailoverTimeout is long enough that Sentinel never "fixes" the
// replica (which replicates from the proxy, not the master's address)
// during a test.
const sentinelFailoverTimeout = 10 * time.Minute

// StartSentinel starts the setup for tb with the replication stream passed
// on at once; DelayReplication holds it back. It returns once the replica
// is in sync and Sentinel knows it.
func StartSentinel(tb testing.TB) *Sentinel {
	tb.Helper()
	s := &Sentinel{tb: tb, Master: Start(tb), dir: tb.TempDir()}
	feed, err := lostreply.New(s.Master.Addr())
	if err != nil {
		tb.Fatalf("testredis: %v", err)
	}
	s.feed = feed
	tb.Cleanup(func() { feed.Close() })
	_, feedPort, _ := net.SplitHostPort(feed.Addr())
	s.Replica = StartWith(tb, Options{Args: []string{"--replicaof", "127.0.0.1", feedPort}})
	if err := s.waitReplicaSynced(30 * time.Second); err != nil {
		tb.Fatalf("testredis: %v", err)
	}
	tb.Cleanup(s.stop)
	var lastErr error
	for range 5 {
		if s.port, err = freePort(); err != nil {
			tb.Fatalf("testredis: %v", err)
		}
		if lastErr = s.start(); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		tb.Fatalf("testredis: sentinel: %v", lastErr)
	}
	if err := s.waitKnowsReplica(30 * time.Second); err != nil {
		tb.Fatalf("testredis: %v", err)
	}
	return s
}

// Addr is the Sentinel's address.
func (s *Sentinel) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is the registry URL: redis://<sentinel>?master_name=mymaster.
func (s *Sentinel) URL() string { return "redis://" + s.Addr() + "?master_name=" + MasterName }

// DelayReplication holds the master's replication stream for d before the
// replica sees it (0: pass it on at once).
func (s *Sentinel) DelayReplication(d time.Duration) {
	if d <= 0 {
		s.feed.Forward()
		return
	}
	s.feed.Delay(d)
}

// KillMaster kills the master (data lost) and closes the replication feed,
// discarding what it holds: writes the master acknowledged in the last
// DelayReplication window never reach the replica. It returns the number
// of replication bytes lost that way.
func (s *Sentinel) KillMaster() int64 {
	s.Master.Stop()
	before := s.feed.Dropped()
	s.feed.CloseConns()
	return s.feed.Dropped() - before
}

// MasterAddr asks Sentinel which address is the master now.
func (s *Sentinel) MasterAddr() (string, error) {
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr(), DialTimeout: time.Second})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	hp, err := c.GetMasterAddrByName(ctx, MasterName).Result()
	if err != nil {
		return "", err
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("sentinel get-master-addr-by-name: %v", hp)
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// WaitFailover waits until Sentinel names the replica as the master and the
// replica reports role:master.
func (s *Sentinel) WaitFailover(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		addr, err := s.MasterAddr()
		if err == nil && sameAddr(addr, s.Replica.Addr()) {
			if role, rerr := s.Replica.info("replication", "role"); rerr == nil && role == "master" {
				return nil
			} else if rerr != nil {
				err = rerr
			} else {
				err = fmt.Errorf("the replica reports role:%s", role)
			}
		} else if err == nil {
			err = fmt.Errorf("sentinel names %s as the master", addr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no failover to the replica within %v: %w", limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// info returns one field of INFO section.
func (s *Server) info(section, field string) (string, error) {
	a := s.admin()
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	txt, err := a.Info(ctx, section).Result()
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(txt, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), field+":"); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("INFO %s has no %s", section, field)
}

func (s *Sentinel) waitReplicaSynced(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		st, err := s.Replica.info("replication", "master_link_status")
		if err == nil && st == "up" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replica not in sync within %v: %s %v", limit, st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Sentinel) waitKnowsReplica(limit time.Duration) error {
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr(), DialTimeout: time.Second})
	defer c.Close()
	deadline := time.Now().Add(limit)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		reps, err := c.Replicas(ctx, MasterName).Result()
		cancel()
		if err == nil {
			for _, r := range reps {
				if r["port"] == strconv.Itoa(s.Replica.Port()) && !strings.Contains(r["flags"], "disconnected") && r["master-link-status"] == "ok" {
					return nil
				}
			}
			err = fmt.Errorf("replicas: %v", reps)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sentinel does not know the replica within %v: %w", limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *Sentinel) start() error {
	conf := filepath.Join(s.dir, "sentinel.conf")
	body := fmt.Sprintf(`port %d
bind 127.0.0.1
daemonize no
dir %s
logfile %s
sentinel monitor %s 127.0.0.1 %d 1
sentinel down-after-milliseconds %s 1000
sentinel failover-timeout %s %d
sentinel parallel-syncs %s 1
`, s.port, s.dir, filepath.Join(s.dir, "sentinel.log"), MasterName, s.Master.Port(), MasterName, MasterName, sentinelFailoverTimeout.Milliseconds(), MasterName)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		return err
	}
	cmd := exec.Command(s.Master.bin, conf, "--sentinel")
	cmd.Dir = s.dir
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	if err := awaitPing(func(ctx context.Context) error { return c.Ping(ctx).Err() }, cmd, exited, fmt.Sprintf("sentinel on port %d", s.port), filepath.Join(s.dir, "sentinel.log")); err != nil {
		return err
	}
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	return nil
}

// Log returns the Sentinel's log (for failure reports).
func (s *Sentinel) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "sentinel.log"))
	return string(b)
}

func (s *Sentinel) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}
