package e2e

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tetherhq/tether/internal/loadgen"
	"github.com/tetherhq/tether/internal/testredis"
)

// redisFaultSetup is one replica on a Redis with N load-generated sessions.
type redisFaultSetup struct {
	srv         *freplica
	lg          *loadgenProc
	before      regView
	disconnects float64 // tether_disconnects_total when all were online
}

func startRedisFault(t *testing.T, redisURL, prefix string, n int, lv liveness) *redisFaultSetup {
	t.Helper()
	s := &redisFaultSetup{srv: startReplica(t, "rf", redisURL, "", lv)}
	s.lg = startLoadgen(t, "tether-loadgen", "--server", s.srv.grpc, "--devices", strconv.Itoa(n), "--id-prefix", prefix)
	s.before = waitAllOnline(t, s.srv.base(), prefix, n, 60*time.Second)
	s.disconnects = s.srv.metric(t, "tether_disconnects_total")
	return s
}

// checkStreamsStayedUp asserts that no session ended on the server and that
// the load generator saw no close, no broken stream and no failed connect.
func (s *redisFaultSetup) checkStreamsStayedUp(t *testing.T) (*loadgen.Report, int) {
	t.Helper()
	ended := int(s.srv.metric(t, "tether_disconnects_total") - s.disconnects)
	if ended != 0 {
		t.Errorf("%d sessions ended on the server during the fault", ended)
	}
	rep := s.lg.finish(t)
	if c, b := sumCounts(rep.ClosedByReason), sumCounts(rep.StreamErrorsByCode); c != 0 || b != 0 || rep.ConnectAttempts != int64(rep.TargetDevices) {
		t.Errorf("the load generator saw %d closed %v, %d broken streams %v, %d connect attempts for %d devices", c, rep.ClosedByReason, b, rep.StreamErrorsByCode, rep.ConnectAttempts, rep.TargetDevices)
	}
	return rep, ended
}

// exactAgain waits until the registry reads exactly the sessions of before
// (same leases, all online on the replica) plus the churn devices (online),
// with the replica's tether_sessions gauge equal to the online count, and
// returns when that first held.
func (s *redisFaultSetup) exactAgain(t *testing.T, limit time.Duration, prefix, churnPrefix string, churn int) time.Time {
	t.Helper()
	n := len(s.before.online)
	return pollUntil(t, limit, 100*time.Millisecond, "the registry exact again", func() error {
		reg, err := readRegistry(s.srv.base(), prefix)
		if err != nil {
			return err
		}
		if len(reg.online) != n {
			return fmt.Errorf("%d of %d online", len(reg.online), n)
		}
		for id, old := range s.before.online {
			if d := reg.all[id]; !d.Online || d.lease() != old.lease() || d.node() != s.srv.node {
				return fmt.Errorf("%s online=%v lease %d on %s, want its own lease %d on %s", id, d.Online, d.lease(), d.node(), old.lease(), s.srv.node)
			}
		}
		if err := reg.consistent(); err != nil {
			return err
		}
		if churn > 0 {
			c, err := readRegistry(s.srv.base(), churnPrefix)
			if err != nil {
				return err
			}
			if len(c.online) != churn {
				return fmt.Errorf("%d of %d devices that connected during the fault online", len(c.online), churn)
			}
			if err := c.consistent(); err != nil {
				return err
			}
		}
		if held := s.srv.sessions(t); held != n+churn {
			return fmt.Errorf("the replica holds %d sessions, %d online", held, n+churn)
		}
		return nil
	})
}

// TestFaultRedisRestartedEmpty: Redis is killed and restarted empty under N
// live sessions; within 5 s every session is back in the registry with its
// own lease (re-mirrored by its replica), and no stream noticed.
func TestFaultRedisRestartedEmpty(t *testing.T) {
	n := bySize(1000, 100)
	lv := faultLiveness()
	row := newFaultRow(t, fmt.Sprintf("5a. Redis restarted empty, %d sessions", n),
		fmt.Sprintf("kill redis-server and start an empty one on the same port (testredis Restart); %v", lv),
		fmt.Sprintf("within 5 s all %d online again with their own leases; 0 sessions ended, 0 loadgen reconnects; sessions held = online", n))
	rd := testredis.Start(t)
	const prefix = "rr-"
	s := startRedisFault(t, rd.URL(), prefix, n, lv)
	remirrors0 := s.srv.metric(t, "tether_registry_remirrors_total")
	rd.Restart()
	restarted := time.Now()
	back := s.exactAgain(t, 5*time.Second, prefix, "", 0)
	remirrors := s.srv.metric(t, "tether_registry_remirrors_total") - remirrors0
	_, ended := s.checkStreamsStayedUp(t)
	row.add("all %d back with their own leases %s after the restart (%v re-mirror); sessions ended %d; loadgen reconnects 0",
		n, fmtSecs(back.Sub(restarted)), remirrors, ended)
}

// TestFaultRedisFrozen: Redis stops answering (SIGSTOP) for a while, then
// resumes. The streams stay up; devices that try to connect meanwhile get
// in after the thaw; the registry is exact afterwards.
func TestFaultRedisFrozen(t *testing.T) {
	n := bySize(1000, 100)
	churn := bySize(50, 10)
	freeze := bySize(10*time.Second, 4*time.Second)
	lv := faultLiveness()
	row := newFaultRow(t, fmt.Sprintf("5b. Redis frozen, %d sessions", n),
		fmt.Sprintf("SIGSTOP redis-server for %v (SIGCONT after); %d more devices try to connect during the freeze; %v", freeze, churn, lv),
		fmt.Sprintf("0 sessions ended (server tether_disconnects_total, loadgen report); after the thaw exactly %d online, the %d with their own leases, sessions held = online", n+churn, n))
	rd := testredis.Start(t)
	const prefix, churnPrefix = "rz-", "rzc-"
	s := startRedisFault(t, rd.URL(), prefix, n, lv)
	rd.Freeze()
	frozen := time.Now()
	lg2 := startLoadgen(t, "tether-loadgen (during the freeze)", "--server", s.srv.grpc, "--devices", strconv.Itoa(churn), "--id-prefix", churnPrefix)
	time.Sleep(time.Until(frozen.Add(freeze)))
	if held := s.srv.sessions(t); held != n {
		t.Errorf("during the freeze the replica holds %d sessions, want %d", held, n)
	}
	rd.Thaw()
	thawed := time.Now()
	exact := s.exactAgain(t, 30*time.Second, prefix, churnPrefix, churn)
	rep, ended := s.checkStreamsStayedUp(t)
	rep2 := lg2.finish(t)
	row.add("registry exact %s after the thaw; sessions ended 0 of %d (server: %d; loadgen: %d closed, %d broken); the %d late devices all online (%d failed attempts during the freeze %v)",
		fmtSecs(exact.Sub(thawed)), n, ended, sumCounts(rep.ClosedByReason), sumCounts(rep.StreamErrorsByCode), churn, rep2.ConnectFailures, rep2.ConnectFailuresByCode)
}

// TestFaultRedisSlow: Redis answers, slowly: DEBUG SLEEP 2 a few times in a
// row (every command waits). Streams stay up; devices connecting meanwhile
// get in; the registry is exact afterwards.
func TestFaultRedisSlow(t *testing.T) {
	n := bySize(1000, 100)
	churn := bySize(50, 10)
	sleeps := bySize(5, 3)
	lv := faultLiveness()
	row := newFaultRow(t, fmt.Sprintf("5c. Redis slow, %d sessions", n),
		fmt.Sprintf("`DEBUG SLEEP 2` issued %d times, 1 s apart, from a goroutine; %d more devices connect meanwhile; %v", sleeps, churn, lv),
		fmt.Sprintf("0 sessions ended; afterwards exactly %d online, the %d with their own leases, sessions held = online", n+churn, n))
	rd := testredis.Start(t)
	addr := rd.Addr()
	// internal/testredis does not pass --enable-debug-command, and Redis 7
	// refuses DEBUG without it; use a server of our own then.
	if err := rd.Client().Do(t.Context(), "DEBUG", "SLEEP", "0").Err(); err != nil {
		t.Logf("testredis refuses DEBUG (%v); starting a redis-server with --enable-debug-command yes", err)
		addr = startDebugRedis(t)
	}
	const prefix, churnPrefix = "rl-", "rlc-"
	s := startRedisFault(t, "redis://"+addr, prefix, n, lv)
	admin := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { admin.Close() })
	var wg sync.WaitGroup
	var slept []time.Duration
	var sleepErr error
	slow := time.Now()
	wg.Go(func() {
		for i := range sleeps {
			if i > 0 {
				time.Sleep(time.Second)
			}
			began := time.Now()
			if err := admin.Do(context.Background(), "DEBUG", "SLEEP", "2").Err(); err != nil {
				sleepErr = err
				return
			}
			slept = append(slept, time.Since(began))
		}
	})
	time.Sleep(200 * time.Millisecond) // the first sleep is on
	lg2 := startLoadgen(t, "tether-loadgen (while Redis is slow)", "--server", s.srv.grpc, "--devices", strconv.Itoa(churn), "--id-prefix", churnPrefix)
	wg.Wait()
	if sleepErr != nil {
		t.Fatalf("DEBUG SLEEP: %v", sleepErr)
	}
	fast := time.Now()
	exact := s.exactAgain(t, 30*time.Second, prefix, churnPrefix, churn)
	rep, ended := s.checkStreamsStayedUp(t)
	rep2 := lg2.finish(t)
	row.add("Redis blocked %s in total over %s (%d × DEBUG SLEEP 2); registry exact %s after the last sleep; sessions ended 0 of %d (server: %d; loadgen: %d closed, %d broken); the %d late devices all online (%d failed attempts %v)",
		fmtSecs(sumDur(slept)), fmtSecs(fast.Sub(slow)), len(slept), fmtSecs(exact.Sub(fast)), n, ended, sumCounts(rep.ClosedByReason), sumCounts(rep.StreamErrorsByCode), churn, rep2.ConnectFailures, rep2.ConnectFailuresByCode)
}

func sumDur(d []time.Duration) time.Duration {
	var s time.Duration
	for _, x := range d {
		s += x
	}
	return s
}

// startDebugRedis runs a redis-server that allows DEBUG (no persistence,
// loopback, killed when the test ends) and returns its address.
func startDebugRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is not in PATH: %v", err)
	}
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	p := launchProc(t, "redis-server (debug)", nil, bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--daemonize", "no", "--enable-debug-command", "yes")
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	pollUntil(t, 10*time.Second, 20*time.Millisecond, "redis-server answering PING", func() error {
		if !p.running() {
			return fmt.Errorf("redis-server exited: %s", strings.TrimSpace(p.out.String()))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		return c.Ping(ctx).Err()
	})
	return addr
}
